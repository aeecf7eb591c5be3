<?php
/* A PHP frontend of availd: the four ways in (proto/README.md), with
 * php-zmq and php-msgpack (Debian: php-cli php-zmq php-msgpack).
 *
 *   php frontend.php [-r ROUTER] [-p PULL] [-s RESULTS] [-g HOST:PORT] MODE NAME...
 *
 * MODE: check (request-reply, a request per name), batch (request-reply,
 * one request per 1,000 names), push (subscribe, then push) or gateway
 * (the TCP line gateway). Prints one line per name: NAME STATUS [REASON].
 * The defaults are the shipped availd.yaml's endpoints.
 */

const BATCH_MAX = 1000;   // names in one check (the protocol's bound)
const WAIT_MS = 30000;    // intake's default deadline (10 s) and a margin

function answer_line(array $a): string
{
    $name = ($a['name'] ?? '') !== '' ? $a['name'] : ($a['query'] ?? '');
    return trim("$name {$a['status']} " . ($a['reason'] ?? ''));
}

// The frames of the next message on $socket, or null after $ms.
function recv_within(ZMQSocket $socket, int $ms): ?array
{
    $poll = new ZMQPoll();
    $poll->add($socket, ZMQ::POLL_IN);
    $readable = $writable = [];
    return $poll->poll($readable, $writable, $ms) ? $socket->recvMulti() : null;
}

// Request-reply on intake's ROUTER: an `answer` per name (check), or an
// `answers` (every answer, in request order) per batch of names.
function request_reply(string $router, bool $batch, array $names): void
{
    $dealer = (new ZMQContext())->getSocket(ZMQ::SOCKET_DEALER);
    $dealer->setSockOpt(ZMQ::SOCKOPT_LINGER, 0);
    $dealer->connect($router);
    $requests = $batch ? array_chunk($names, BATCH_MAX) : $names;
    foreach ($requests as $i => $request) {
        $check = ['t' => 'check', 'v' => 1, 'id' => 'php-' . getmypid() . "-$i"];
        $check[$batch ? 'names' : 'name'] = $request;
        $dealer->send(msgpack_pack($check));
        $reply = recv_within($dealer, WAIT_MS) or exit_with("no reply within " . WAIT_MS . " ms");
        $reply = msgpack_unpack($reply[0]);
        foreach ($reply['t'] === 'answers' ? $reply['answers'] : [$reply] as $answer)
            echo answer_line($answer), "\n";
    }
}

// Push + subscribe: answers come on the PUB socket as [id][answer], each
// as soon as it is final. Subscribe first, and ping until the pong comes
// back (ZeroMQ's slow joiner), or the first answers are lost.
function push_subscribe(string $pull, string $results, array $names): void
{
    $id = 'php-push-' . getmypid();
    $context = new ZMQContext();
    $sub = $context->getSocket(ZMQ::SOCKET_SUB);
    $sub->setSockOpt(ZMQ::SOCKOPT_LINGER, 0);
    $sub->setSockOpt(ZMQ::SOCKOPT_SUBSCRIBE, $id);
    $sub->connect($results);
    $push = $context->getSocket(ZMQ::SOCKET_PUSH);
    $push->setSockOpt(ZMQ::SOCKOPT_LINGER, 1000);
    $push->connect($pull);
    for ($tries = 0;; $tries++) {
        $tries < WAIT_MS / 100 or exit_with("no pong from intake");
        $push->send(msgpack_pack(['t' => 'ping', 'v' => 1, 'id' => $id]));
        $frames = recv_within($sub, 100);
        if ($frames && msgpack_unpack(end($frames))['t'] === 'pong')
            break;
    }
    foreach (array_chunk($names, BATCH_MAX) as $batch)
        $push->send(msgpack_pack(['t' => 'check', 'v' => 1, 'id' => $id, 'names' => $batch]));
    for ($got = 0; $got < count($names);) {
        $frames = recv_within($sub, WAIT_MS) or exit_with("$got of " . count($names) . " answers within " . WAIT_MS . " ms");
        $answer = msgpack_unpack(end($frames));
        if ($answer['t'] === 'answer') {  // not a late pong of an extra ping
            echo answer_line($answer), "\n";
            $got++;
        }
    }
}

// The TCP line gateway: NAME\r\n in, NAME STATUS [REASON]\r\n out, then
// the server closes. A connection per name.
function gateway(string $hostport, array $names): void
{
    foreach ($names as $name) {
        $conn = @stream_socket_client("tcp://$hostport", $errno, $error, WAIT_MS / 1000)
            or exit_with("gateway $hostport: $error");
        stream_set_timeout($conn, WAIT_MS / 1000);
        fwrite($conn, "$name\r\n");
        $line = rtrim(stream_get_contents($conn), "\r\n");
        fclose($conn);
        $line !== '' or exit_with("no line from the gateway for $name");
        echo $line, "\n";
    }
}

function exit_with(string $why): never
{
    fwrite(STDERR, "frontend.php: $why\n");
    exit(1);
}

$opts = getopt('r:p:s:g:', [], $rest);
$args = array_slice($argv, $rest);
$mode = array_shift($args);
if (count($args) < 1 || !in_array($mode, ['check', 'batch', 'push', 'gateway'], true)) {
    fwrite(STDERR, "usage: frontend.php [-r ROUTER] [-p PULL] [-s RESULTS] [-g HOST:PORT] check|batch|push|gateway NAME...\n");
    exit(2);
}
$router = $opts['r'] ?? 'ipc:///run/availd/intake.sock';
$pull = $opts['p'] ?? 'ipc:///run/availd/intake-pull.sock';
$results = $opts['s'] ?? 'ipc:///run/availd/intake-results.sock';
match ($mode) {
    'check', 'batch' => request_reply($router, $mode === 'batch', $args),
    'push' => push_subscribe($pull, $results, $args),
    'gateway' => gateway($opts['g'] ?? '127.0.0.1:4300', $args),
};
