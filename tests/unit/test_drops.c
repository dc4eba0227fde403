/* test_drops.c - the drop counters (hypha/drops.h): the "log at the 1st,
 * 10th, 100th" rule (also when one step jumps past a power of ten, and near
 * UINT64_MAX), counting, the text form and the total, and what reaches the
 * log; the per-peer warning counter (hy_warn_mark) and values cut for the
 * log (hy_log_cut). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hypha/drops.h"
#include "logcap.h"

/* ---- hy_log_mark ------------------------------------------------------------ */

static void test_log_mark_single_steps(void **state)
{
    (void)state;
    /* one at a time: true exactly at 1, 10, 100, 1000 */
    int marks = 0;
    for (uint64_t n = 0; n < 5000; n++)
        if (hy_log_mark(n, n + 1)) {
            assert_true(n + 1 == 1 || n + 1 == 10 || n + 1 == 100 || n + 1 == 1000);
            marks++;
        }
    assert_int_equal(marks, 4);
    assert_true(hy_log_mark(0, 1));
    assert_true(hy_log_mark(9, 10));
    assert_true(hy_log_mark(99, 100));
    assert_false(hy_log_mark(1, 2));
    assert_false(hy_log_mark(10, 11));
    assert_false(hy_log_mark(100, 101));
    /* no change: nothing passed */
    assert_false(hy_log_mark(0, 0));
    assert_false(hy_log_mark(10, 10));
}

static void test_log_mark_jumps(void **state)
{
    (void)state;
    assert_true(hy_log_mark(5, 12));    /* passes 10 */
    assert_false(hy_log_mark(12, 15));  /* 100 not reached */
    assert_true(hy_log_mark(0, 150));   /* passes 1, 10 and 100 at once */
    assert_true(hy_log_mark(99, 100));
    assert_true(hy_log_mark(1, 10));
    assert_false(hy_log_mark(1, 9));
    assert_true(hy_log_mark(11, 1000));
    assert_false(hy_log_mark(100, 999));
    assert_true(hy_log_mark(999999, 1000000));
    assert_false(hy_log_mark(1000000, 9999999));
}

static void test_log_mark_near_uint64_max(void **state)
{
    (void)state;
    const uint64_t e19 = 10000000000000000000ull; /* the last power of ten under UINT64_MAX */
    const uint64_t e18 = 1000000000000000000ull;
    /* each returns (the loop that looks for the next mark ends) */
    assert_false(hy_log_mark(UINT64_MAX - 1, UINT64_MAX));
    assert_false(hy_log_mark(UINT64_MAX, UINT64_MAX));
    assert_false(hy_log_mark(e19, UINT64_MAX));
    assert_true(hy_log_mark(e19 - 1, e19));
    assert_true(hy_log_mark(e19 - 1, UINT64_MAX));
    assert_true(hy_log_mark(e18 - 1, e18));
    assert_false(hy_log_mark(e18, e19 - 1));
    assert_true(hy_log_mark(0, UINT64_MAX));
}

/* ---- counting and the text form ----------------------------------------------- */

static void test_add_counts_each_reason(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    assert_int_equal(hy_drops_total(&d), 0);
    hy_drops_add(&d, HY_DROP_UNKNOWN_TYPE, 7, 1);
    hy_drops_add(&d, HY_DROP_UNKNOWN_TYPE, 7, 2);
    hy_drops_add(&d, HY_DROP_NOT_RUNNING, 1001, 5);
    hy_drops_add(&d, HY_DROP_QUEUE_NEWEST, 1001, 4);
    assert_int_equal(d.n[HY_DROP_UNKNOWN_TYPE], 3);
    assert_int_equal(d.n[HY_DROP_NOT_RUNNING], 5);
    assert_int_equal(d.n[HY_DROP_QUEUE_NEWEST], 4);
    for (int i = 0; i < HY_DROP__COUNT; i++)
        if (i != HY_DROP_UNKNOWN_TYPE && i != HY_DROP_NOT_RUNNING && i != HY_DROP_QUEUE_NEWEST)
            assert_int_equal(d.n[i], 0);
    assert_int_equal(hy_drops_total(&d), 12);
    /* init again: all zero, identity kept as given */
    hy_drops_init(&d, "relay", "from", "x#1", NULL, NULL);
    assert_int_equal(hy_drops_total(&d), 0);
    assert_string_equal(d.component, "relay");
    assert_null(d.k2);
    log_release(&log);
}

static void test_total_counts_every_reason(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    uint64_t want = 0;
    for (int i = 0; i < HY_DROP__COUNT; i++) {
        hy_drops_add(&d, (hy_drop)i, 1, (uint64_t)i + 1);
        want += (uint64_t)i + 1;
    }
    assert_int_equal(hy_drops_total(&d), want);
    log_release(&log);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(hy_drop_str(HY_DROP_UNKNOWN_TYPE), "unknown-type");
    assert_string_equal(hy_drop_str(HY_DROP_WRONG_SIZE), "wrong-size");
    assert_string_equal(hy_drop_str(HY_DROP_NOT_ALLOWED), "not-allowed");
    assert_string_equal(hy_drop_str(HY_DROP_NOT_RUNNING), "not-running");
    assert_string_equal(hy_drop_str(HY_DROP_EXITED), "worker-exited");
    assert_string_equal(hy_drop_str(HY_DROP_NO_MEMORY), "out-of-memory");
    assert_string_equal(hy_drop_str(HY_DROP_QUEUE_OLDEST), "queue-full-oldest");
    assert_string_equal(hy_drop_str(HY_DROP_QUEUE_NEWEST), "queue-full-newest");
    assert_string_equal(hy_drop_str(HY_DROP_HOLD_EXPIRED), "hold-expired");
    assert_string_equal(hy_drop_str(HY_DROP_HOLD_CANCELLED), "hold-cancelled");
}

static void test_format(void **state)
{
    (void)state;
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    char out[256];
    assert_string_equal(hy_drops_format(&d, ",", out, sizeof out), "none");
    assert_string_equal(hy_drops_format(&d, " ", out, sizeof out), "none");
    d.n[HY_DROP_WRONG_SIZE] = 2;
    assert_ptr_equal(hy_drops_format(&d, ",", out, sizeof out), out);
    assert_string_equal(out, "wrong-size=2");
    d.n[HY_DROP_UNKNOWN_TYPE] = 1;
    d.n[HY_DROP_QUEUE_NEWEST] = 12345678901234ull;
    assert_string_equal(hy_drops_format(&d, ",", out, sizeof out),
                        "unknown-type=1,wrong-size=2,queue-full-newest=12345678901234");
    assert_string_equal(hy_drops_format(&d, " ", out, sizeof out),
                        "unknown-type=1 wrong-size=2 queue-full-newest=12345678901234");
    /* every reason, in enum order */
    for (int i = 0; i < HY_DROP__COUNT; i++)
        d.n[i] = (uint64_t)i + 1;
    assert_string_equal(hy_drops_format(&d, ",", out, sizeof out),
                        "unknown-type=1,wrong-size=2,not-allowed=3,not-running=4,worker-exited=5,"
                        "out-of-memory=6,queue-full-oldest=7,queue-full-newest=8,hold-expired=9,hold-cancelled=10");
    /* a short buffer: cut, still terminated, nothing written past it */
    char small[16];
    memset(small, 'X', sizeof small);
    hy_drops_format(&d, ",", small, 10);
    assert_int_equal(strlen(small), 9);
    assert_memory_equal(small, "unknown-t", 9);
    for (size_t i = 10; i < sizeof small; i++)
        assert_int_equal(small[i], 'X');
}

/* ---- what is logged ------------------------------------------------------------------ */

static void test_flood_logs_at_powers_of_ten(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "3");
    for (int i = 0; i < 1000; i++)
        hy_drops_add(&d, HY_DROP_NOT_RUNNING, 1002, 1);
    assert_int_equal(d.n[HY_DROP_NOT_RUNNING], 1000);
    assert_int_equal(log_count(&log, "frame dropped"), 4);
    assert_int_equal(log_count_lines(&log, "frame dropped", "total=1\n"), 1);
    assert_int_equal(log_count_lines(&log, "frame dropped", "total=10\n"), 1);
    assert_int_equal(log_count_lines(&log, "frame dropped", "total=100\n"), 1);
    assert_int_equal(log_count_lines(&log, "frame dropped", "total=1000\n"), 1);
    /* the line names who, why and what */
    assert_int_equal(log_count_lines(&log, "frame dropped", " router "), 4);
    assert_int_equal(log_count_lines(&log, "frame dropped", "worker=w instance=3"), 4);
    assert_int_equal(log_count_lines(&log, "frame dropped", "reason=not-running"), 4);
    assert_int_equal(log_count_lines(&log, "frame dropped", "type=1002"), 4);
    /* 1000 more: only 10000 is missing, so nothing */
    for (int i = 0; i < 1000; i++)
        hy_drops_add(&d, HY_DROP_NOT_RUNNING, 1002, 1);
    assert_int_equal(log_count(&log, "frame dropped"), 4);
    log_release(&log);
}

static void test_counters_log_apart(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "relay", "from", "tcp:h:1#2", NULL, NULL);
    hy_drops_add(&d, HY_DROP_UNKNOWN_TYPE, 9, 1);
    hy_drops_add(&d, HY_DROP_WRONG_SIZE, 1001, 1);
    hy_drops_add(&d, HY_DROP_UNKNOWN_TYPE, 9, 1);
    /* each reason has its own 1st */
    assert_int_equal(log_count(&log, "frame dropped"), 2);
    assert_int_equal(log_count_lines(&log, "reason=unknown-type", "from=tcp:h:1#2"), 1);
    assert_int_equal(log_count_lines(&log, "reason=wrong-size", "type=1001"), 1);
    assert_int_equal(log_count(&log, "instance="), 0); /* no second key */
    log_release(&log);
}

/* With a namer registered (hyphad's supervisor does it), the line names the
 * message beside its id; an id it does not know gets no name. */
static const char *fake_names(const void *ud, uint16_t id)
{
    assert_string_equal(ud, "contracts");
    return id == 2001 ? "TradeTick" : NULL;
}

static void test_type_names(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d, r;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    hy_drops_init(&r, "relay", "from", "upstream", NULL, NULL);
    hy_drops_set_namer(fake_names, "contracts");
    hy_drops_add(&d, HY_DROP_NOT_ALLOWED, 2001, 1);
    hy_drops_add(&d, HY_DROP_UNKNOWN_TYPE, 4242, 1);
    hy_drops_add(&r, HY_DROP_WRONG_SIZE, 2001, 1);
    hy_drops_set_namer(NULL, NULL);
    hy_drops_add(&d, HY_DROP_NOT_RUNNING, 2001, 1);
    assert_string_equal(log_text(&log),
                        "warn router frame dropped worker=w instance=0 reason=not-allowed type=2001 type_name=TradeTick total=1\n"
                        "warn router frame dropped worker=w instance=0 reason=unknown-type type=4242 total=1\n"
                        "warn relay frame dropped from=upstream reason=wrong-size type=2001 type_name=TradeTick total=1\n"
                        "warn router frame dropped worker=w instance=0 reason=not-running type=2001 total=1\n");
    log_release(&log);
}

/* The last minute of a receiver: samples every 10 s, the oldest of 7 the
 * start; only receiver reasons; routed = accepted + dropped before the queue. */
static void test_drop_window(void **state)
{
    (void)state;
    hy_dropwin w;
    memset(&w, 0, sizeof w);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    /* no sample yet: since the counters began */
    d.n[HY_DROP_QUEUE_NEWEST] = 30;
    d.n[HY_DROP_NOT_ALLOWED] = 500; /* the sender's: not about frames meant for it */
    hy_dropwin_delta r = hy_dropwin_since(&w, 5.0, 70, &d);
    assert_int_equal(r.dropped, 30);
    assert_int_equal(r.routed, 100);
    assert_int_equal(r.main, HY_DROP_QUEUE_NEWEST);
    assert_true(r.span_s == 0.0);
    /* one sample every 10 s: delivered grows by 100, newest by 10, not-running by 50 from t=40 */
    uint64_t delivered = 70;
    for (int k = 1; k <= 10; k++) {
        delivered += 100;
        d.n[HY_DROP_QUEUE_NEWEST] += 10;
        if (k >= 4)
            d.n[HY_DROP_NOT_RUNNING] += 50;
        hy_dropwin_record(&w, 10.0 * k, delivered, &d);
        r = hy_dropwin_since(&w, 10.0 * k + 5, delivered, &d);
        if (k < HY_DROPWIN_SLOTS) { /* since the first sample */
            assert_true(r.span_s == 10.0 * (k - 1) + 5);
        } else {                    /* since the oldest of 7: 65 s ago */
            assert_true(r.span_s == 65.0);
        }
    }
    /* at t=105 the window starts at t=40: 6 steps of +100 delivered, +10 newest, +50 not-running */
    assert_int_equal(r.dropped, 6 * 60);
    assert_int_equal(r.routed, 6 * 100 + 6 * 60);
    assert_int_equal(r.main, HY_DROP_NOT_RUNNING);
    /* nothing since: still the same minute's story, then none of it */
    for (int k = 11; k <= 17; k++)
        hy_dropwin_record(&w, 10.0 * k, delivered, &d);
    r = hy_dropwin_since(&w, 175.0, delivered, &d);
    assert_int_equal(r.dropped, 0);
    assert_int_equal(r.routed, 0);
    /* drop-oldest drops frames its queue had accepted: counted once */
    delivered += 1000;
    d.n[HY_DROP_QUEUE_OLDEST] += 400;
    r = hy_dropwin_since(&w, 176.0, delivered, &d);
    assert_int_equal(r.dropped, 400);
    assert_int_equal(r.routed, 1000);
    assert_int_equal(r.main, HY_DROP_QUEUE_OLDEST);
    assert_true(hy_drop_for_receiver(HY_DROP_EXITED) && hy_drop_for_receiver(HY_DROP_QUEUE_OLDEST) &&
                !hy_drop_for_receiver(HY_DROP_UNKNOWN_TYPE) && !hy_drop_for_receiver(HY_DROP_WRONG_SIZE));
}

/* A bad stream's first bytes in a log line, and whether they look like
 * text (a print() on stdout) or not. */
static void test_escape_bytes(void **state)
{
    (void)state;
    char out[4 * 32 + 4];
    assert_string_equal(hy_log_escape_bytes(out, (const uint8_t *)"hello fr", 8, true), "hello fr\xe2\x80\xa6");
    assert_string_equal(hy_log_escape_bytes(out, (const uint8_t *)"hi\n\t\\\"", 6, false), "hi\\x0a\\x09\\\\\"");
    static const uint8_t bin[] = {0xff, 0x00, 0x7f, 'A'};
    assert_string_equal(hy_log_escape_bytes(out, bin, sizeof bin, false), "\\xff\\x00\\x7fA");
    assert_string_equal(hy_log_escape_bytes(out, bin, 0, false), "");
    uint8_t all[32];
    memset(all, 0xab, sizeof all);
    assert_int_equal(strlen(hy_log_escape_bytes(out, all, sizeof all, true)), 4 * 32 + 3); /* the worst case fits */

    assert_true(hy_bytes_look_like_text((const uint8_t *)"hello from a script\n", 20));
    assert_true(hy_bytes_look_like_text((const uint8_t *)"Traceback (most\r\n", 17));
    assert_true(hy_bytes_look_like_text((const uint8_t *)"pr\xc3\xa9sent\x01", 10)); /* UTF-8, one control */
    static const uint8_t frame[] = {0xe9, 0x03, 0x10, 0x00, 0x00, 0x00, 'a', 'b'};
    assert_false(hy_bytes_look_like_text(frame, sizeof frame));
    assert_false(hy_bytes_look_like_text(all, sizeof all));
    assert_false(hy_bytes_look_like_text(all, 0));
    static const uint8_t mixed[] = {'a', 'b', 'c', 0xff, 'd', 'e', 0x00, 0x01}; /* 5 of 8: not mostly */
    assert_false(hy_bytes_look_like_text(mixed, sizeof mixed));
}

static void test_batch_passing_a_mark_logs_once(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    hy_drops_add(&d, HY_DROP_EXITED, 0, 5);  /* passes 1 */
    assert_int_equal(log_count(&log, "frame dropped"), 1);
    assert_int_equal(log_count_lines(&log, "reason=worker-exited", "total=5"), 1);
    hy_drops_add(&d, HY_DROP_EXITED, 0, 7);  /* 5 -> 12 passes 10 */
    assert_int_equal(log_count(&log, "frame dropped"), 2);
    assert_int_equal(log_count_lines(&log, "reason=worker-exited", "total=12"), 1);
    hy_drops_add(&d, HY_DROP_EXITED, 0, 3);  /* 12 -> 15: nothing */
    assert_int_equal(log_count(&log, "frame dropped"), 2);
    hy_drops_add(&d, HY_DROP_EXITED, 0, 500); /* 15 -> 515 passes 100: one line */
    assert_int_equal(log_count(&log, "frame dropped"), 3);
    hy_drops_add(&d, HY_DROP_EXITED, 0, 0);   /* nothing dropped: nothing said */
    assert_int_equal(log_count(&log, "frame dropped"), 3);
    assert_int_equal(d.n[HY_DROP_EXITED], 515);
    log_release(&log);
}

static void test_queue_full_not_logged_here(void **state)
{
    (void)state;
    logcap log;
    log_capture(&log);
    hy_drops d;
    hy_drops_init(&d, "router", "worker", "w", "instance", "0");
    for (int i = 0; i < 100; i++) {
        hy_drops_add(&d, HY_DROP_QUEUE_OLDEST, 1001, 1);
        hy_drops_add(&d, HY_DROP_QUEUE_NEWEST, 1001, 1);
    }
    assert_int_equal(d.n[HY_DROP_QUEUE_OLDEST], 100);
    assert_int_equal(d.n[HY_DROP_QUEUE_NEWEST], 100);
    assert_int_equal(hy_drops_total(&d), 200);
    assert_int_equal(strlen(log_text(&log)), 0);
    log_release(&log);
}

/* ---- hy_warn_mark: one peer's warnings of one kind ------------------------------ */

static void test_warn_mark_thousand_is_four_lines(void **state)
{
    (void)state;
    hy_warn_count c = {0};
    uint64_t logged_at[8], supp[8], s = 99;
    int lines = 0;
    for (int i = 0; i < 1000; i++)
        if (hy_warn_mark(&c, &s)) {
            assert_true(lines < 8);
            logged_at[lines] = c.total;
            supp[lines++] = s;
        } else {
            assert_int_equal(s, 0);
        }
    assert_int_equal(lines, 4);
    assert_int_equal(c.total, 1000);
    const uint64_t at[] = {1, 10, 100, 1000}, sup[] = {0, 8, 89, 899};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(logged_at[i], at[i]);
        assert_int_equal(supp[i], sup[i]);
    }
    /* what was logged plus what was suppressed is every occurrence */
    assert_int_equal(4 + 0 + 8 + 89 + 899, 1000);
    /* on to 10000: the next line says the 8999 in between */
    for (int i = 0; i < 8999; i++)
        assert_false(hy_warn_mark(&c, &s));
    assert_true(hy_warn_mark(&c, &s));
    assert_int_equal(c.total, 10000);
    assert_int_equal(s, 8999);
}

static void test_warn_mark_counters_apart(void **state)
{
    (void)state;
    hy_warn_count a = {0}, b = {0};
    uint64_t s;
    assert_true(hy_warn_mark(&a, &s));
    assert_false(hy_warn_mark(&a, &s));
    assert_true(hy_warn_mark(&b, &s)); /* b's own 1st */
    assert_int_equal(s, 0);
    assert_int_equal(a.total, 2);
    assert_int_equal(b.total, 1);
}

static void test_warn_mark_saturates(void **state)
{
    (void)state;
    hy_warn_count c = {UINT64_MAX - 1, 10000000000000000000ull};
    uint64_t s;
    assert_false(hy_warn_mark(&c, &s));
    assert_int_equal(c.total, UINT64_MAX);
    assert_false(hy_warn_mark(&c, &s)); /* stays, never wraps to a new 1st */
    assert_int_equal(c.total, UINT64_MAX);
}

/* ---- hy_log_cut ------------------------------------------------------------------- */

static void test_log_cut(void **state)
{
    (void)state;
    char out[HY_LOG_CUT + 4];
    assert_string_equal(hy_log_cut(out, HY_LOG_CUT, "subscribe", 9), "subscribe");
    assert_string_equal(hy_log_cut(out, HY_LOG_CUT, "", 0), "");
    char big[65536];
    memset(big, 'a', sizeof big);
    assert_ptr_equal(hy_log_cut(out, HY_LOG_CUT, big, sizeof big), out);
    assert_int_equal(strlen(out), HY_LOG_CUT + 3);
    assert_memory_equal(out + HY_LOG_CUT, "...", 4);
    /* exactly max: whole, no dots; max + 1: cut */
    assert_int_equal(strlen(hy_log_cut(out, HY_LOG_CUT, big, HY_LOG_CUT)), HY_LOG_CUT);
    assert_int_equal(strlen(hy_log_cut(out, HY_LOG_CUT, big, HY_LOG_CUT + 1)), HY_LOG_CUT + 3);
    /* never inside a UTF-8 character: "é" is C3 A9, the cut falls on A9 */
    char utf[8] = {'a', 'b', 'c', (char)0xC3, (char)0xA9, 'x', 'y', 'z'};
    assert_string_equal(hy_log_cut(out, 4, utf, sizeof utf), "abc...");
    assert_string_equal(hy_log_cut(out, 5, utf, sizeof utf), "abc\xC3\xA9...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_mark_single_steps),
        cmocka_unit_test(test_log_mark_jumps),
        cmocka_unit_test(test_log_mark_near_uint64_max),
        cmocka_unit_test(test_add_counts_each_reason),
        cmocka_unit_test(test_total_counts_every_reason),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_flood_logs_at_powers_of_ten),
        cmocka_unit_test(test_counters_log_apart),
        cmocka_unit_test(test_batch_passing_a_mark_logs_once),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_escape_bytes),
        cmocka_unit_test(test_drop_window),
        cmocka_unit_test(test_queue_full_not_logged_here),
        cmocka_unit_test(test_warn_mark_thousand_is_four_lines),
        cmocka_unit_test(test_warn_mark_counters_apart),
        cmocka_unit_test(test_warn_mark_saturates),
        cmocka_unit_test(test_log_cut),
    };
    return cmocka_run_group_tests_name("drops", tests, NULL, NULL);
}
