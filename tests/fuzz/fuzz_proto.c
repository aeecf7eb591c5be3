/* libFuzzer target for the message decoder: any bytes must decode or be
 * rejected with an error code, never crash, leak or read out of bounds; and
 * whatever decodes must re-encode to a message that decodes the same. */
#include "av_proto.h"

#include <stdlib.h>
#include <string.h>

static void
roundtrip(const av_msg_t *msg)
{
    msgpack_sbuffer sbuf;
    av_msg_t again;
    int rc = 0;
    msgpack_sbuffer_init(&sbuf);
    switch (msg->type) {
    case AV_MSG_CHECK: rc = av_encode_check(&sbuf, &msg->u.check); break;
    case AV_MSG_ANSWER: rc = av_encode_answer(&sbuf, &msg->u.answer); break;
    case AV_MSG_READY:
    case AV_MSG_HEARTBEAT:
    case AV_MSG_BYE: rc = av_encode_ready(&sbuf, msg->type, &msg->u.ready); break;
    case AV_MSG_ERROR: rc = av_encode_error(&sbuf, &msg->u.error); break;
    case AV_MSG_PUT: rc = av_encode_put(&sbuf, &msg->u.put); break;
    default: msgpack_sbuffer_destroy(&sbuf); return; /* open-ended maps */
    }
    if (rc != 0)
        abort();
    av_msg_init(&again);
    /* A check re-encoded without an id of ours still has all it needs. */
    if (av_msg_decode(&again, sbuf.data, sbuf.size) != 0 || again.type != msg->type)
        abort();
    if (msg->type == AV_MSG_CHECK && av_check_count(&again.u.check) != av_check_count(&msg->u.check))
        abort();
    if (msg->type == AV_MSG_ANSWER && (again.u.answer.status != msg->u.answer.status ||
                                       again.u.answer.name.len != msg->u.answer.name.len))
        abort();
    av_msg_release(&again);
    msgpack_sbuffer_destroy(&sbuf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    av_msg_t msg;
    char why[128];
    av_msg_init(&msg);
    int rc = av_msg_decode(&msg, data, size);
    av_msg_strerror(&msg, rc, why, sizeof why);
    if (rc == 0)
        roundtrip(&msg);
    av_msg_release(&msg);
    return 0;
}
