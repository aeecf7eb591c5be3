#!/usr/bin/perl
#
# availd-old - domain availability daemon, the "old design" baseline
#
# One Net::Server::PreFork whois daemon, written the way the daemon availd
# replaces was: a pool of forked Perl children, each handling one client at a
# time; a DB_File cache on disk shared by all children under flock; a
# blocking whois query to the registry on every cache miss.  It is kept for
# comparison benchmarks only (see README.md next to it).
#
# Protocol (the same as availd-intake's TCP gateway):
#   client:  NAME\r\n
#   server:  NAME STATUS [reason]\r\n      then closes the connection
# STATUS is available, registered, reserved, invalid or unknown.
#
# Run `availd-old.pl --help` for the options.

use strict;
use warnings;

package Availd::Old;

use base qw(Net::Server::PreFork);

use DB_File;
use Encode ();
use Fcntl qw(:flock O_RDONLY O_RDWR O_CREAT);
use File::Spec;
use Getopt::Long qw(GetOptionsFromArray);
use IO::Select;
use IO::Socket::INET;
use Net::IDN::Encode ();
use POSIX ();
use Time::HiRes ();

our $VERSION = '1.0';

use constant {
    MAX_LINE        => 1024,      # bytes of a client's query line, LF included
    MAX_NAME        => 253,       # bytes of an A-label name without the root dot
    MAX_LABEL       => 63,
    MAX_REPLY       => 65536,     # registry reply bytes we read and classify
};

# Cache lifetimes per status, seconds; a status not listed is not cached.
my %TTL = (
    registered => 86400,
    reserved   => 86400,
    available  => 60,
);

# How a registry reply is classified: first match wins, in this order (a
# reserved name's reply also has "Domain Name:").  Case-insensitive and
# multi-line, like availd's registry patterns.
my @PATTERNS = (
    [ unknown    => 'rate_limited', qr/rate limit exceeded/im ],
    [ reserved   => '',             qr/reserved by registry policy/im ],
    [ registered => '',             qr/Domain Name:/im ],
    [ available  => '',             qr/^No match for/im ],
);

my %DEFAULTS = (
    port              => 4343,
    registry_host     => '127.0.0.1',
    registry_port     => undef,
    registry_timeout  => 10,
    client_timeout    => 10,
    cache_file        => '/var/tmp/availd-old/cache.db',
    clear_cache       => 0,
    log               => 'stderr',
    log_level         => 2,
    pid_file          => undef,
    background        => 0,
    user              => undef,
    group             => undef,
    cidr_allow        => [],
    cidr_deny         => [],
    # The old daemon's process settings.
    min_servers       => 5,
    min_spare_servers => 2,
    max_spare_servers => 5,
    max_servers       => 20,
    max_requests      => 100,
);

sub usage {
    my ($status) = @_;
    my $fh = $status ? \*STDERR : \*STDOUT;
    print $fh <<"EOT";
usage: $0 --registry-port N [options]

  --port N                 listen on 127.0.0.1:N (default 4343)
  --registry-host ADDR     the registry's whois server; loopback only
                           (127.0.0.0/8 or localhost; default 127.0.0.1)
  --registry-port N        its port (required)
  --registry-timeout S     seconds for connecting to it and for its reply (10)
  --client-timeout S       seconds a client has to send its line (10)
  --cache-file PATH        the DB_File cache shared by all children
                           (default /var/tmp/availd-old/cache.db; PATH.lock
                           is its lock file)
  --clear-cache            empty the cache at start
  --log stderr|syslog|FILE where to log (default stderr)
  --log-level 0..4         0 errors, 1 warnings, 2 notices, 3 info (one line
                           per request), 4 debug (default 2)
  --pid-file PATH          write the parent's pid there
  --background             fork into the background and setsid
  --user U, --group G      drop privileges after binding (when root)
  --cidr-allow CIDR, --cidr-deny CIDR   (repeatable) who may connect
  --min-servers N (5), --min-spare-servers N (2), --max-spare-servers N (5),
  --max-servers N (20), --max-requests N (100)
                           the Net::Server::PreFork pool settings
  --help
EOT
    exit $status;
}

# A registry or listen host must be loopback: this daemon is only ever run
# against a local fake registry.  Returns the address or undef.
sub loopback_address {
    my ($host) = @_;
    return '127.0.0.1' if lc($host) eq 'localhost';
    return undef unless $host =~ /\A127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\z/;
    return undef if grep { $_ > 255 } $1, $2, $3;
    return $host;
}

sub parse_command_line {
    my (@argv) = @_;
    my %opt = %DEFAULTS;
    $opt{cidr_allow} = [];
    $opt{cidr_deny}  = [];
    GetOptionsFromArray(\@argv,
        'port=i'              => \$opt{port},
        'registry-host=s'     => \$opt{registry_host},
        'registry-port=i'     => \$opt{registry_port},
        'registry-timeout=f'  => \$opt{registry_timeout},
        'client-timeout=f'    => \$opt{client_timeout},
        'cache-file=s'        => \$opt{cache_file},
        'clear-cache!'        => \$opt{clear_cache},
        'log=s'               => \$opt{log},
        'log-level=i'         => \$opt{log_level},
        'pid-file=s'          => \$opt{pid_file},
        'background!'         => \$opt{background},
        'user=s'              => \$opt{user},
        'group=s'             => \$opt{group},
        'cidr-allow=s'        => $opt{cidr_allow},
        'cidr-deny=s'         => $opt{cidr_deny},
        'min-servers=i'       => \$opt{min_servers},
        'min-spare-servers=i' => \$opt{min_spare_servers},
        'max-spare-servers=i' => \$opt{max_spare_servers},
        'max-servers=i'       => \$opt{max_servers},
        'max-requests=i'      => \$opt{max_requests},
        'help'                => sub { usage(0) },
    ) or usage(2);
    die "$0: unexpected argument '$argv[0]' (see --help)\n" if @argv;
    die "$0: --registry-port is required\n" unless defined $opt{registry_port};
    for my $k (qw(port registry_port)) {
        die "$0: bad port $opt{$k}\n" unless $opt{$k} >= 1 && $opt{$k} <= 65535;
    }
    my $addr = loopback_address($opt{registry_host});
    die "$0: refusing registry host '$opt{registry_host}': not a loopback address "
      . "(127.0.0.0/8 or localhost); this baseline only talks to a local fake registry\n"
        unless defined $addr;
    $opt{registry_host} = $addr;
    die "$0: --log-level must be 0..4\n" unless $opt{log_level} >= 0 && $opt{log_level} <= 4;
    die "$0: timeouts must be > 0\n" unless $opt{registry_timeout} > 0 && $opt{client_timeout} > 0;
    die "$0: --cache-file must not be empty\n" unless length $opt{cache_file};
    $opt{cache_file} = File::Spec->rel2abs($opt{cache_file});
    return \%opt;
}

sub main {
    my @cmdline = (File::Spec->rel2abs($0), @ARGV);   # re-executed on SIGHUP
    my $opt = eval { parse_command_line(@ARGV) };
    unless ($opt) {   # a bad command line: say why, exit 2
        print STDERR $@;
        exit 2;
    }
    @ARGV = ();   # or Net::Server would parse them again, its own way

    my $server = Availd::Old->new;
    $server->{availd} = $opt;
    $server->commandline([$^X, @cmdline]);

    my %log;
    if ($opt->{log} eq 'stderr') {
        %log = ();   # Net::Server logs to STDERR without a log_file
    } elsif ($opt->{log} eq 'syslog') {
        %log = (log_file => 'Sys::Syslog', syslog_ident => 'availd-old',
                syslog_facility => 'daemon', syslog_logsock => 'unix');
    } else {
        %log = (log_file => File::Spec->rel2abs($opt->{log}));
    }

    $server->run(
        port              => "127.0.0.1:$opt->{port}",
        proto             => 'tcp',
        ipv               => 4,
        # listen backlog: Net::Server's default, SOMAXCONN (4096 here)
        serialize         => 'flock',
        lock_file         => "$opt->{cache_file}.accept",
        min_servers       => $opt->{min_servers},
        min_spare_servers => $opt->{min_spare_servers},
        max_spare_servers => $opt->{max_spare_servers},
        max_servers       => $opt->{max_servers},
        max_requests      => $opt->{max_requests},
        log_level         => $opt->{log_level},
        %log,
        ($opt->{pid_file}   ? (pid_file => File::Spec->rel2abs($opt->{pid_file})) : ()),
        ($opt->{background} ? (background => 1, setsid => 1) : ()),
        (defined $opt->{user}  ? (user  => $opt->{user})  : ()),
        (defined $opt->{group} ? (group => $opt->{group}) : ()),
        (@{ $opt->{cidr_allow} } ? (cidr_allow => $opt->{cidr_allow}) : ()),
        (@{ $opt->{cidr_deny} }  ? (cidr_deny  => $opt->{cidr_deny})  : ()),
        no_client_stdout  => 1,
    );
}

### ---------------------------------------------------------------- logging

sub write_to_log_hook {
    my ($self, $level, $msg) = @_;
    my $prop = $self->{server};
    # Sys::Syslog adds its own time and pid.
    return $self->SUPER::write_to_log_hook($level, $msg)
        if $prop->{log_file} && $prop->{log_file} eq 'Sys::Syslog';
    return $self->SUPER::write_to_log_hook($level,
        sprintf('%s availd-old[%d]: %s', POSIX::strftime('%Y-%m-%dT%H:%M:%S', localtime), $$, $msg));
}

### ---------------------------------------------------------- server hooks

# Runs in the parent, before binding (and before privileges are dropped).
sub post_configure_hook {
    my ($self) = @_;
    my $opt = $self->{availd};
    my ($vol, $dir) = File::Spec->splitpath($opt->{cache_file});
    my $cache_dir = File::Spec->catpath($vol, $dir, '') || '.';
    unless (-d $cache_dir) {
        mkdir $cache_dir, 0755 or $self->fatal("cannot create $cache_dir: $!");
    }
}

# Runs in the parent after binding and dropping privileges, before forking:
# makes sure the cache and its lock file exist, so that a child never has to
# create them under a shared lock.
sub pre_loop_hook {
    my ($self) = @_;
    my $opt  = $self->{availd};
    my $file = $opt->{cache_file};
    open my $lock, '>>', "$file.lock" or $self->fatal("cannot open $file.lock: $!");
    flock($lock, LOCK_EX) or $self->fatal("cannot lock $file.lock: $!");
    if ($opt->{clear_cache} && -e $file) {
        unlink $file or $self->fatal("cannot remove $file: $!");
    }
    my %db;
    tie(%db, 'DB_File', $file, O_RDWR | O_CREAT, 0644, $DB_HASH)
        or $self->fatal("cannot open the cache $file: $!");
    my $entries = scalar keys %db;
    untie %db;
    close $lock;
    $self->log(2, "cache $file: $entries entries; registry $opt->{registry_host}:$opt->{registry_port}");
}

# Runs in every new child.  The lock file must be opened here, not in the
# parent: flock locks belong to the open file, and a handle inherited over
# fork would be one lock shared by all children.
sub child_init_hook {
    my ($self) = @_;
    my $opt = $self->{availd};
    open my $lock, '>>', "$opt->{cache_file}.lock"
        or $self->fatal("cannot open $opt->{cache_file}.lock: $!");
    $self->{availd_lock} = $lock;
    $self->{availd_stats} = { requests => 0, hits => 0, misses => 0, invalid => 0 };
}

sub child_finish_hook {
    my ($self) = @_;
    my $s = $self->{availd_stats} or return;
    $self->log(3, "child done: $s->{requests} requests, $s->{hits} cache hits, "
                . "$s->{misses} registry queries, $s->{invalid} invalid");
}

### ---------------------------------------------------------------- a request

sub process_request {
    my ($self) = @_;
    my $opt    = $self->{availd};
    my $client = $self->{server}{client};
    my $t0     = [Time::HiRes::gettimeofday()];

    # Read one line, LF-terminated, within client_timeout.
    my $line = '';
    my $ok = eval {
        local $SIG{ALRM} = sub { die "client timeout\n" };
        alarm($opt->{client_timeout});
        while (index($line, "\n") < 0 && length($line) < MAX_LINE) {
            my $n = sysread($client, $line, MAX_LINE - length($line), length($line));
            die "client went away\n" unless $n;
        }
        alarm(0);
        1;
    };
    alarm(0);
    unless ($ok) {
        $self->log(4, "no query from " . $self->{server}{peeraddr} . ": $@");
        return;
    }
    my $nl = index($line, "\n");
    if ($nl < 0) {
        $self->reply("% query too long\r\n");
        return;
    }
    substr($line, $nl) = '';
    $line =~ s/\A[ \t]+//;
    $line =~ s/[ \t\r]+\z//;
    if ($line eq '') {
        $self->reply("% empty query: send NAME\r\n");
        return;
    }
    $self->{availd_stats}{requests}++;

    my ($status, $reason, $source);
    my ($name, $why) = normalize($line);
    if (!defined $name) {
        ($status, $reason, $source) = ('invalid', $why, 'local');
        $self->{availd_stats}{invalid}++;
    } elsif (my $hit = $self->cache_get($name)) {
        ($status, $reason, $source) = (@$hit, 'cache');
        $self->{availd_stats}{hits}++;
    } else {
        ($status, $reason) = $self->ask_registry($name);
        $source = 'whois';
        $self->{availd_stats}{misses}++;
        $self->cache_put($name, $status, $reason) if $TTL{$status};
    }

    $self->reply("$line $status" . (length $reason ? " $reason" : '') . "\r\n");
    $self->log(3, sprintf('%s %s %s%s (%s, %.1f ms)', $self->{server}{peeraddr}, $line, $status,
        (length $reason ? " $reason" : ''), $source, 1000 * Time::HiRes::tv_interval($t0)))
        if $self->{server}{log_level} >= 3;
}

sub reply {
    my ($self, $text) = @_;
    my $client = $self->{server}{client};
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $text) {
        my $n = syswrite($client, $text, length($text) - $off, $off);
        last unless $n;   # the client left
        $off += $n;
    }
}

### ------------------------------------------------------------------ names

# From what a user typed to the A-label we ask about.  Returns the name, or
# (undef, reason) with availd's reason codes.
sub normalize {
    my ($input) = @_;
    my $name = $input;
    $name =~ s/\.\z//;    # the root's dot
    return (undef, 'empty_name')    if $name eq '';
    return (undef, 'name_too_long') if length($name) > 4 * MAX_NAME;
    return (undef, 'bad_character') if $name =~ /\0/;

    if ($name =~ /[^\x00-\x7f]/ || $name =~ /xn--/i) {
        # Only an IDN's non-ASCII characters may be outside LDH.
        (my $ascii = $name) =~ s/[\x80-\xff]+//g;
        return (undef, 'bad_character') if $ascii =~ /[^A-Za-z0-9.-]/;
        my $u = eval { Encode::decode('UTF-8', $name, Encode::FB_CROAK()) };
        return (undef, 'idna_error') unless defined $u;
        my $a = eval {
            Net::IDN::Encode::domain_to_ascii($u, UseSTD3ASCIIRules => 1, TransitionalProcessing => 0);
        };
        return (undef, 'idna_error') unless defined $a;
        $name = lc $a;
        # An xn-- label must decode, and encode back to itself.
        for my $label (grep { /\Axn--/ } split /\./, $name) {
            my $back = eval {
                lc Net::IDN::Encode::domain_to_ascii(Net::IDN::Encode::domain_to_unicode($label),
                                                     UseSTD3ASCIIRules => 1, TransitionalProcessing => 0);
            };
            return (undef, 'idna_error') unless defined $back && $back eq $label;
        }
    } else {
        $name = lc $name;
    }

    return (undef, 'name_too_long') if length($name) > MAX_NAME;
    my @labels = split /\./, $name, -1;
    for my $label (@labels) {
        return (undef, 'empty_label')    if $label eq '';
        return (undef, 'label_too_long') if length($label) > MAX_LABEL;
        return (undef, 'bad_character')  if $label =~ /[^a-z0-9-]/;
        return (undef, 'bad_hyphen')     if $label =~ /\A-|-\z/;
        return (undef, 'bad_hyphen')     if $label =~ /\A..--/ && $label !~ /\Axn--/;
    }
    return (undef, 'single_label') if @labels < 2;
    return $name;
}

### ------------------------------------------------------------------ cache

# The cache is a Berkeley DB hash (DB_File) shared by every child.  DB_File
# keeps pages in memory, so the database is tied only while its lock file
# is held (shared to read, exclusive to write) and untied before unlocking.
# Entries are "status\treason\texpires".

sub cache_get {
    my ($self, $name) = @_;
    my $lock = $self->{availd_lock};
    my %db;
    my $value;
    flock($lock, LOCK_SH) or return;
    if (tie %db, 'DB_File', $self->{availd}{cache_file}, O_RDONLY, 0644, $DB_HASH) {
        $value = $db{$name};
        untie %db;
    } else {
        $self->log(1, "cannot read the cache: $!");
    }
    flock($lock, LOCK_UN);
    return unless defined $value;
    my ($status, $reason, $expires) = split /\t/, $value, 3;
    return unless $expires && $expires > time;
    return [$status, $reason];
}

sub cache_put {
    my ($self, $name, $status, $reason) = @_;
    my $lock = $self->{availd_lock};
    my %db;
    flock($lock, LOCK_EX) or return;
    if (tie %db, 'DB_File', $self->{availd}{cache_file}, O_RDWR | O_CREAT, 0644, $DB_HASH) {
        $db{$name} = join "\t", $status, $reason, time + $TTL{$status};
        untie %db;
    } else {
        $self->log(1, "cannot write the cache: $!");
    }
    flock($lock, LOCK_UN);
}

### ---------------------------------------------------------------- registry

# One blocking whois query (RFC 3912): connect, send NAME\r\n, read until
# the server closes (at most MAX_REPLY bytes), all within registry_timeout.
# Returns (status, reason).
sub ask_registry {
    my ($self, $name) = @_;
    my $opt      = $self->{availd};
    my $deadline = Time::HiRes::time() + $opt->{registry_timeout};
    my $where    = "$opt->{registry_host}:$opt->{registry_port}";

    my $sock = IO::Socket::INET->new(
        PeerAddr => $opt->{registry_host},
        PeerPort => $opt->{registry_port},
        Proto    => 'tcp',
        Timeout  => $opt->{registry_timeout},
    );
    unless ($sock) {
        my $timeout = $!{ETIMEDOUT} || ($@ && $@ =~ /timeout/i);
        $self->log(1, "registry $where: cannot connect for $name: " . ($@ || $!));
        return ('unknown', $timeout ? 'timeout' : 'registry_error');
    }
    local $SIG{PIPE} = 'IGNORE';
    my $query = "$name\r\n";
    unless (defined syswrite($sock, $query) ) {
        $self->log(1, "registry $where: cannot send $name: $!");
        return ('unknown', 'registry_error');
    }

    my $reply = '';
    my $sel = IO::Select->new($sock);
    while (length($reply) < MAX_REPLY) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0 || !$sel->can_read($left)) {
            $self->log(1, "registry $where: no reply for $name within $opt->{registry_timeout} s");
            return ('unknown', 'timeout');
        }
        my $n = sysread($sock, $reply, MAX_REPLY - length($reply), length($reply));
        last if defined $n && $n == 0;          # closed: the reply is whole
        next if defined $n;
        next if $!{EINTR};
        last if $!{ECONNRESET} && length $reply; # some servers reset after writing
        $self->log(1, "registry $where: cannot read the reply for $name: $!");
        return ('unknown', 'registry_error');
    }
    close $sock;   # a reply longer than MAX_REPLY is classified on its start

    return ('unknown', 'empty_reply') if $reply =~ /\A\s*\z/;
    for my $p (@PATTERNS) {
        my ($status, $reason, $re) = @$p;
        return ($status, $reason) if $reply =~ $re;
    }
    $self->log(1, "registry $where: unparseable reply for $name");
    return ('unknown', 'unparseable');
}

package main;

Availd::Old::main() unless caller;

1;
