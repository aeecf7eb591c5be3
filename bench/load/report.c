/* The report at the end of a run: a table for people, or one JSON object
 * (--json) for scripts that compare runs. Both say the same things; the
 * README explains each figure. */
#include "load.h"

#include <stdio.h>
#include <string.h>

static double
elapsed_s(const load_stats_t *s)
{
    return s->end_us > s->start_us ? (double)(s->end_us - s->start_us) / 1e6 : 0;
}

static double
per_s(uint64_t n, const load_stats_t *s)
{
    double t = elapsed_s(s);
    return t > 0 ? (double)n / t : 0;
}

static double
ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static uint64_t
definite(const load_stats_t *s)
{
    return s->by_status[AV_STATUS_AVAILABLE] + s->by_status[AV_STATUS_REGISTERED] +
           s->by_status[AV_STATUS_RESERVED];
}

static double
cpu_us_per_answer(double cpu_s, uint64_t answers)
{
    return answers ? cpu_s * 1e6 / (double)answers : 0;
}

/* ---- text ------------------------------------------------------------------ */

static void
text_latency(const char *label, const load_hist_t *h)
{
    printf("%-16s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms\n", label,
           ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)),
           ms(hist_quantile(h, 0.999)), ms(h->max_us), h->total ? ms(h->sum_us / h->total) : 0.0);
}

static void
text_phase(const load_stats_t *s, bool verify)
{
    printf("%-16s %llu requests, %llu names\n", "sent", (unsigned long long)s->requests_sent,
           (unsigned long long)s->names_sent);
    printf("%-16s %llu in %.2f s = %.1f checks/s (%.1f requests/s)\n", "answers", (unsigned long long)s->answers,
           elapsed_s(s), per_s(s->answers, s), per_s(s->requests_sent, s));
    text_latency("latency", &s->latency);
    if (s->send_lag.total)
        text_latency("send lag", &s->send_lag);
    printf("%-16s", "status");
    for (int i = 0; i < AV_STATUS_COUNT; i++)
        printf(" %s %llu", av_status_name((av_status_t)i), (unsigned long long)s->by_status[i]);
    printf("\n%-16s", "source");
    bool any = false;
    for (int i = 0; i < AV_SOURCE_COUNT; i++) {
        if (s->by_source[i]) {
            printf(" %s %llu", av_source_name((av_source_t)i), (unsigned long long)s->by_source[i]);
            any = true;
        }
    }
    if (s->no_source)
        printf(" (not told) %llu", (unsigned long long)s->no_source);
    else if (!any)
        printf(" -");
    printf("\n");
    if (s->n_reasons || s->reasons_other) {
        printf("%-16s", "reasons");
        for (uint32_t i = 0; i < s->n_reasons; i++)
            printf(" %s %llu%s", s->reasons[i].text, (unsigned long long)s->reasons[i].count,
                   i + 1 < s->n_reasons || s->reasons_other ? "," : "");
        if (s->reasons_other)
            printf(" (others) %llu", (unsigned long long)s->reasons_other);
        printf("\n");
    }
    printf("%-16s timeouts %llu  late %llu  duplicates %llu  misattributed %llu  unmatched %llu  undecodable %llu\n",
           "problems", (unsigned long long)s->timeouts, (unsigned long long)s->late,
           (unsigned long long)s->duplicates, (unsigned long long)s->misattributed,
           (unsigned long long)s->unmatched, (unsigned long long)s->undecodable);
    if (s->errors || s->unclosed)
        printf("%-16s %llu (refused %llu, connect %llu, closed early %llu)  unclosed %llu\n", "errors",
               (unsigned long long)s->errors, (unsigned long long)s->error_refused,
               (unsigned long long)s->error_connect, (unsigned long long)s->error_closed,
               (unsigned long long)s->unclosed);
    if (verify)
        printf("%-16s %llu definite answers checked, %llu wrong\n", "verify hash", (unsigned long long)s->verified,
               (unsigned long long)s->wrong);
    if (s->blocked_sends)
        printf("%-16s %llu requests waited for the socket\n", "blocked", (unsigned long long)s->blocked_sends);
}

void
report_print_text(const load_report_t *r)
{
    printf("availd-load: %s to %s, names %s, batch %u, ", r->mode, r->endpoint, r->names_spec, r->batch);
    if (r->rate_per_s > 0)
        printf("open loop at %.1f requests/s (at most %u in flight)", r->rate_per_s, r->outstanding);
    else
        printf("closed loop of %u outstanding", r->outstanding);
    printf(", timeout %u ms%s\n", r->timeout_ms, r->interrupted ? " (interrupted)" : "");
    if (r->warmup) {
        const load_stats_t *w = r->warmup;
        printf("warm-up: %llu names, %llu answers (%llu definite) in %.2f s, %llu timeouts, %llu duplicates, "
               "%llu wrong\n",
               (unsigned long long)w->names_sent, (unsigned long long)w->answers,
               (unsigned long long)definite(w), elapsed_s(w), (unsigned long long)w->timeouts,
               (unsigned long long)w->duplicates, (unsigned long long)w->wrong);
    }
    printf("\n");
    text_phase(r->run, r->verify);
    printf("\n%-36s %9s %11s %9s %9s\n", "process", "cpu s", "us/answer", "rss MB", "hwm MB");
    for (uint32_t i = 0; i < r->n_watch; i++) {
        const load_watch_t *w = &r->watch[i];
        char label[112];
        if (w->tree)
            snprintf(label, sizeof label, "%s tree (%d, %u procs)", w->label, (int)w->pid, w->procs);
        else
            snprintf(label, sizeof label, "%s (%d)", w->label, (int)w->pid);
        if (w->gone) {
            printf("%-36s gone during the run\n", label);
            continue;
        }
        double cpu = w->cpu_end_s - w->cpu_start_s;
        printf("%-36s %9.2f %11.1f %9.1f %9.1f\n", label, cpu, cpu_us_per_answer(cpu, r->run->answers),
               (double)w->rss_kb / 1024.0, (double)w->hwm_kb / 1024.0);
    }
    printf("%-36s %9.2f %11.1f\n", "availd-load (self)", r->self_cpu_s, cpu_us_per_answer(r->self_cpu_s, r->run->answers));
    if (r->machine_busy_s >= 0) {
        double watched = r->self_cpu_s, wall = elapsed_s(r->run) * (r->machine_cpus ? r->machine_cpus : 1);
        for (uint32_t i = 0; i < r->n_watch; i++)
            if (!r->watch[i].gone)
                watched += r->watch[i].cpu_end_s - r->watch[i].cpu_start_s;
        double other = r->machine_busy_s > watched ? r->machine_busy_s - watched : 0;
        printf("%-36s %9.2f %11.1f   (%u CPUs %.0f%% busy; not watched: %.2f s, %.0f%%)\n", "machine (all CPUs)",
               r->machine_busy_s, cpu_us_per_answer(r->machine_busy_s, r->run->answers), r->machine_cpus,
               wall > 0 ? 100.0 * r->machine_busy_s / wall : 0.0, other, wall > 0 ? 100.0 * other / wall : 0.0);
    }
}

/* ---- JSON ------------------------------------------------------------------ */

static void
json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void
json_hist(const char *key, const load_hist_t *h)
{
    printf("\"%s\":{\"count\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
           key, (unsigned long long)h->total, ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)),
           ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)), ms(h->max_us),
           h->total ? ms(h->sum_us / h->total) : 0.0);
}

static void
json_phase(const load_stats_t *s)
{
    printf("{\"requests_sent\":%llu,\"names_sent\":%llu,\"answers\":%llu,\"elapsed_s\":%.3f,"
           "\"checks_per_s\":%.1f,\"requests_per_s\":%.1f,",
           (unsigned long long)s->requests_sent, (unsigned long long)s->names_sent, (unsigned long long)s->answers,
           elapsed_s(s), per_s(s->answers, s), per_s(s->requests_sent, s));
    json_hist("latency_ms", &s->latency);
    putchar(',');
    json_hist("send_lag_ms", &s->send_lag);
    printf(",\"status\":{");
    for (int i = 0; i < AV_STATUS_COUNT; i++)
        printf("%s\"%s\":%llu", i ? "," : "", av_status_name((av_status_t)i), (unsigned long long)s->by_status[i]);
    printf("},\"source\":{");
    for (int i = 0; i < AV_SOURCE_COUNT; i++)
        printf("%s\"%s\":%llu", i ? "," : "", av_source_name((av_source_t)i), (unsigned long long)s->by_source[i]);
    printf(",\"not_told\":%llu},\"reasons\":{", (unsigned long long)s->no_source);
    for (uint32_t i = 0; i < s->n_reasons; i++) {
        printf("%s", i ? "," : "");
        json_str(s->reasons[i].text);
        printf(":%llu", (unsigned long long)s->reasons[i].count);
    }
    if (s->reasons_other)
        printf("%s\"(others)\":%llu", s->n_reasons ? "," : "", (unsigned long long)s->reasons_other);
    printf("},\"timeouts\":%llu,\"late\":%llu,\"duplicates\":%llu,\"misattributed\":%llu,\"unmatched\":%llu,"
           "\"undecodable\":%llu,\"verified\":%llu,\"wrong\":%llu,\"blocked_sends\":%llu,"
           "\"errors\":{\"total\":%llu,\"refused\":%llu,\"connect\":%llu,\"closed\":%llu,\"unclosed\":%llu}}",
           (unsigned long long)s->timeouts, (unsigned long long)s->late, (unsigned long long)s->duplicates,
           (unsigned long long)s->misattributed, (unsigned long long)s->unmatched,
           (unsigned long long)s->undecodable, (unsigned long long)s->verified, (unsigned long long)s->wrong,
           (unsigned long long)s->blocked_sends, (unsigned long long)s->errors,
           (unsigned long long)s->error_refused, (unsigned long long)s->error_connect,
           (unsigned long long)s->error_closed, (unsigned long long)s->unclosed);
}

void
report_print_json(const load_report_t *r)
{
    printf("{\"mode\":");
    json_str(r->mode);
    printf(",\"endpoint\":");
    json_str(r->endpoint);
    printf(",\"names\":");
    json_str(r->names_spec);
    printf(",\"batch\":%u,\"loop\":\"%s\",\"outstanding\":%u,\"rate_per_s\":%.1f,\"timeout_ms\":%u,"
           "\"verify\":%s,\"interrupted\":%s,",
           r->batch, r->rate_per_s > 0 ? "open" : "closed", r->outstanding, r->rate_per_s, r->timeout_ms,
           r->verify ? "true" : "false", r->interrupted ? "true" : "false");
    if (r->warmup) {
        printf("\"warmup\":");
        json_phase(r->warmup);
        putchar(',');
    }
    printf("\"run\":");
    json_phase(r->run);
    printf(",\"processes\":[");
    for (uint32_t i = 0; i < r->n_watch; i++) {
        const load_watch_t *w = &r->watch[i];
        double cpu = w->gone ? 0 : w->cpu_end_s - w->cpu_start_s;
        printf("%s{\"pid\":%d,\"label\":", i ? "," : "", (int)w->pid);
        json_str(w->label);
        printf(",\"tree\":%s,\"procs\":%u,\"gone\":%s,\"cpu_s\":%.3f,\"cpu_us_per_answer\":%.2f,\"rss_kb\":%llu,"
               "\"hwm_kb\":%llu}",
               w->tree ? "true" : "false", w->tree ? w->procs : 1, w->gone ? "true" : "false", cpu,
               cpu_us_per_answer(cpu, r->run->answers), (unsigned long long)w->rss_kb,
               (unsigned long long)w->hwm_kb);
    }
    printf("],\"self\":{\"cpu_s\":%.3f,\"cpu_us_per_answer\":%.2f},", r->self_cpu_s,
           cpu_us_per_answer(r->self_cpu_s, r->run->answers));
    if (r->machine_busy_s >= 0)
        printf("\"machine\":{\"cpus\":%u,\"busy_cpu_s\":%.3f}}\n", r->machine_cpus, r->machine_busy_s);
    else
        printf("\"machine\":null}\n");
}
