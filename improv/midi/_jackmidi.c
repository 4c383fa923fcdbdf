/* improv's JACK process callback: one client with a MIDI input and a MIDI output, no Python.

Why native: a Python callback on JACK's realtime thread must take the GIL every time a message
arrives (and a client cancelled while it waits for the GIL hangs the process), and python-rtmidi
makes the input and the output two JACK clients, each woken every period. Here one client is woken
per period, and its callback never blocks, allocates or locks.

Contract with improv/midi/jack.py, which opens the client with libjack through ctypes and hands the
libjack functions this file calls in `ijm_api` (so it needs no JACK headers or library to build):
- version: jack.py refuses a library whose ijm_abi_version() is not the IJM_ABI_VERSION it was
  written for, and reads the sizes below from ijm_limits() rather than repeating them.
- time: JACK's microsecond clock (jack_get_time) read when the callback starts. Not JACK's
  frame-to-time estimates: they go wrong by milliseconds when the machine wakes JACK late.
- input: each message of up to IJM_MAX_BYTES bytes goes into a single-producer single-consumer
  ring with two times. `time_us`, the callback's start: the moment improv could first hear it,
  never before it was sent and never later than the reader sees it. `at_us`, the message's own
  time: its frame within the period the cycle carries, the period that ended at the cycle's start
  (the output below places a due time on the same grid, so a message sent due at t is read at t to
  the frame, and at_us is never after time_us). A byte is written to `wake_fd` so a reader thread
  waiting in select() wakes. Sysex, MIDI time code and active sensing are dropped here.
- clock: a MIDI clock pulse (0xF8) is not a message but a time: its at_us goes into a ring of its
  own, read in batches (ijm_read_pulses) and with no wake-up, so a flood of pulses can neither fill
  the message ring nor wake the reader; pulses that find it full are counted (IJM_DROPPED_PULSES).
  Start, Continue, Stop and Song Position go through the message ring like any message.
- output: messages come through another such ring, each with a due time in JACK microseconds
  (0: as soon as possible), and leave in the order they were sent. A message goes out in the first
  cycle that starts at or after its due time, at the offset of its time within the period before:
  listeners never see it early, and a synth plays it with one period of latency and no jitter.
- measurement: the start of the last cycle that wrote output (ijm_last_out_us), and the starts of
  the last IJM_LATE cycles that began over 1.5 periods after the one before (ijm_late_cycles), so
  the test and benchmark probe can time a message from the cycle that carried it, and tell what the
  machine disturbed from what the program did.
*/
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef uint32_t ijm_nframes;
typedef uint64_t ijm_time;

typedef struct {
    ijm_nframes time;
    size_t size;
    unsigned char *buffer;
} ijm_midi_event; /* jack_midi_event_t */

typedef struct {
    void *(*port_get_buffer)(void *port, ijm_nframes nframes);
    uint32_t (*midi_get_event_count)(void *buffer);
    int (*midi_event_get)(ijm_midi_event *event, void *buffer, uint32_t index);
    void (*midi_clear_buffer)(void *buffer);
    int (*midi_event_write)(void *buffer, ijm_nframes time, const unsigned char *data, size_t size);
    size_t (*midi_max_event_size)(void *buffer);
    ijm_time (*get_time)(void);
} ijm_api;

/* Change it with anything jack.py relies on: an exported function's name or signature, ijm_api's
   fields or their order, the counters' order. (The sizes below are read through ijm_limits.) */
#define IJM_ABI_VERSION 2

#define IJM_MAX_BYTES 12 /* longest message a record holds (sysex is dropped); fills the record to 32 bytes */
#define IJM_RING 4096    /* messages each ring holds (a power of two) */
#define IJM_LATE 256     /* late cycles remembered (a power of two) */
#define IJM_PULSES 4096  /* clock pulse times the pulse ring holds (a power of two): 34 s at 300 BPM */

typedef struct {
    ijm_time time_us; /* input: the cycle's start; output: the due time (0: at once) */
    ijm_time at_us;   /* input: the message's own frame time; output: unused */
    uint32_t size;
    unsigned char data[IJM_MAX_BYTES];
} ijm_record;

typedef struct {
    ijm_record items[IJM_RING];
    _Atomic uint64_t head; /* next to read; written by the consumer only */
    _Atomic uint64_t tail; /* next to write; written by the producer only */
} ijm_ring;

/* The frame times of clock pulses: the same single-producer single-consumer ring, of bare times. */
typedef struct {
    ijm_time items[IJM_PULSES];
    _Atomic uint64_t head;
    _Atomic uint64_t tail;
} ijm_pulse_ring;

/* Counts only (in the order of COUNTERS in jack.py); times have their own fields. */
enum {
    IJM_CYCLES, IJM_DROPPED_IN, IJM_DROPPED_OUT, IJM_FILTERED, IJM_SERVER_GONE, IJM_PULSES_IN, IJM_DROPPED_PULSES,
    IJM_COUNTERS
};

typedef struct {
    ijm_api api;
    void *client;
    _Atomic(void *) in_port;
    _Atomic(void *) out_port;
    int wake_fd;
    uint32_t sample_rate;
    ijm_ring in, out;
    ijm_pulse_ring pulses;
    ijm_time last_due_us; /* sender's side: due times never go backwards, so order is kept */
    _Atomic uint64_t counters[IJM_COUNTERS];
    _Atomic ijm_time last_out_us; /* the start of the last cycle that wrote output (0: none yet) */
    /* Cycles that began more than 1.5 periods after the one before (JACK did not keep time: the
       machine woke it late, or it missed a cycle), by their start: a measurement can tell what
       the machine disturbed from what the program did. */
    ijm_time last_cycle_us;
    _Atomic uint64_t late_count;
    _Atomic ijm_time late_us[IJM_LATE];
} ijm_state;

static int ring_push(ijm_ring *ring, const ijm_record *record) {
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    if (tail - atomic_load_explicit(&ring->head, memory_order_acquire) >= IJM_RING) return -1;
    ring->items[tail & (IJM_RING - 1)] = *record;
    atomic_store_explicit(&ring->tail, tail + 1, memory_order_release);
    return 0;
}

static ijm_record *ring_peek(ijm_ring *ring) {
    uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    if (head == atomic_load_explicit(&ring->tail, memory_order_acquire)) return NULL;
    return &ring->items[head & (IJM_RING - 1)];
}

static void ring_pop(ijm_ring *ring) {
    atomic_fetch_add_explicit(&ring->head, 1, memory_order_release);
}

static void pulse_push(ijm_state *s, ijm_time at_us) {
    ijm_pulse_ring *ring = &s->pulses;
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    if (tail - atomic_load_explicit(&ring->head, memory_order_acquire) >= IJM_PULSES) {
        atomic_fetch_add_explicit(&s->counters[IJM_DROPPED_PULSES], 1, memory_order_relaxed);
        return;
    }
    ring->items[tail & (IJM_PULSES - 1)] = at_us;
    atomic_store_explicit(&ring->tail, tail + 1, memory_order_release);
    atomic_fetch_add_explicit(&s->counters[IJM_PULSES_IN], 1, memory_order_relaxed);
}

static int dropped_on_input(const unsigned char *data, size_t size) {
    if (size == 0 || size > IJM_MAX_BYTES) return 1;
    return data[0] == 0xF0 || data[0] == 0xF1 || data[0] == 0xFE;
}

/* The time of frame `offset` of a cycle that started at `now_us`: the frames a cycle carries are
   those of the period before its start, as the output side places them. */
static ijm_time frame_time_us(ijm_time now_us, ijm_time period_us, ijm_nframes offset, ijm_nframes nframes) {
    if (offset >= nframes) offset = nframes - 1;
    return now_us - period_us + (ijm_time)offset * period_us / nframes;
}

static void process_input(ijm_state *s, void *port, ijm_nframes nframes, ijm_time now_us, ijm_time period_us) {
    void *buffer = s->api.port_get_buffer(port, nframes);
    uint32_t count = s->api.midi_get_event_count(buffer);
    int queued = 0;
    for (uint32_t i = 0; i < count; i++) {
        ijm_midi_event event;
        if (s->api.midi_event_get(&event, buffer, i) != 0) continue;
        ijm_time at_us = frame_time_us(now_us, period_us, event.time, nframes);
        if (event.size == 1 && event.buffer[0] == 0xF8) {
            pulse_push(s, at_us);
            continue;
        }
        if (dropped_on_input(event.buffer, event.size)) {
            atomic_fetch_add_explicit(&s->counters[IJM_FILTERED], 1, memory_order_relaxed);
            continue;
        }
        ijm_record record = {now_us, at_us, (uint32_t)event.size, {0}};
        memcpy(record.data, event.buffer, event.size);
        if (ring_push(&s->in, &record) != 0) {
            atomic_fetch_add_explicit(&s->counters[IJM_DROPPED_IN], 1, memory_order_relaxed);
            continue;
        }
        queued = 1;
    }
    if (queued && s->wake_fd >= 0) {
        ssize_t ignored = write(s->wake_fd, "", 1); /* non-blocking: a full pipe already wakes the reader */
        (void)ignored;
    }
}

static void process_output(ijm_state *s, void *port, ijm_nframes nframes, ijm_time now_us, ijm_time period_us) {
    void *buffer = s->api.port_get_buffer(port, nframes);
    s->api.midi_clear_buffer(buffer);
    ijm_nframes earliest = 0; /* JACK wants event times in order within a cycle */
    ijm_record *record;
    while ((record = ring_peek(&s->out)) != NULL) {
        ijm_nframes offset = 0;
        if (record->time_us != 0) {
            if (record->time_us > now_us) break; /* due later: it and all sent after it wait */
            ijm_time late_us = now_us - record->time_us;
            if (late_us < period_us) offset = (ijm_nframes)((period_us - late_us) * nframes / period_us);
            if (offset >= nframes) offset = nframes - 1;
        }
        if (offset < earliest) offset = earliest;
        /* A full port buffer (a few hundred messages a cycle): the rest waits for the next cycle.
           Asked first because JACK prints an error from this thread when a write does not fit. */
        if (s->api.midi_max_event_size(buffer) < record->size) break;
        if (s->api.midi_event_write(buffer, offset, record->data, record->size) != 0) break;
        earliest = offset;
        /* Before the pop: a reader that sees the ring empty (acquire on head) sees this cycle too. */
        atomic_store_explicit(&s->last_out_us, now_us, memory_order_relaxed);
        ring_pop(&s->out);
    }
}

int ijm_process(ijm_nframes nframes, void *arg) {
    ijm_state *s = arg;
    ijm_time now_us = s->api.get_time();
    ijm_time period_us = (ijm_time)nframes * 1000000u / s->sample_rate;
    if (s->last_cycle_us != 0 && now_us - s->last_cycle_us > period_us * 3 / 2) {
        uint64_t n = atomic_load_explicit(&s->late_count, memory_order_relaxed);
        atomic_store_explicit(&s->late_us[n & (IJM_LATE - 1)], now_us, memory_order_relaxed);
        atomic_store_explicit(&s->late_count, n + 1, memory_order_release);
    }
    s->last_cycle_us = now_us;
    void *in_port = atomic_load_explicit(&s->in_port, memory_order_acquire);
    void *out_port = atomic_load_explicit(&s->out_port, memory_order_acquire);
    if (in_port != NULL) process_input(s, in_port, nframes, now_us, period_us);
    if (out_port != NULL) process_output(s, out_port, nframes, now_us, period_us);
    atomic_fetch_add_explicit(&s->counters[IJM_CYCLES], 1, memory_order_release);
    return 0;
}

/* JACK calls this (jack_on_shutdown) when its server stops or throws the client out: the client
   is dead from then on. The reader thread is woken to notice. */
void ijm_shutdown(void *arg) {
    ijm_state *s = arg;
    atomic_store_explicit(&s->counters[IJM_SERVER_GONE], 1, memory_order_release);
    if (s->wake_fd >= 0) {
        ssize_t ignored = write(s->wake_fd, "", 1);
        (void)ignored;
    }
}

uint32_t ijm_abi_version(void) {
    return IJM_ABI_VERSION;
}

void ijm_limits(uint32_t *max_bytes, uint32_t *ring_size, uint32_t *late_cycles_kept, uint32_t *pulses_kept) {
    *max_bytes = IJM_MAX_BYTES;
    *ring_size = IJM_RING;
    *late_cycles_kept = IJM_LATE;
    *pulses_kept = IJM_PULSES;
}

ijm_state *ijm_new(const ijm_api *api, void *client, int wake_fd, uint32_t sample_rate) {
    ijm_state *s = calloc(1, sizeof(ijm_state));
    if (s == NULL || sample_rate == 0) {
        free(s);
        return NULL;
    }
    /* Touch every page now (and keep them in memory where allowed), so the realtime callback never
       takes a page fault on first use of a ring. */
    for (size_t i = 0; i < sizeof(ijm_state); i += 4096) ((volatile unsigned char *)s)[i] = 0;
    (void)mlock(s, sizeof(ijm_state));
    s->sample_rate = sample_rate;
    s->api = *api;
    s->client = client;
    s->wake_fd = wake_fd;
    return s;
}

void ijm_free(ijm_state *s) {
    (void)munlock(s, sizeof(ijm_state));
    free(s);
}

/* The process callback stops touching a port from its next cycle on; the caller waits for one. */
void ijm_set_ports(ijm_state *s, void *in_port, void *out_port) {
    atomic_store_explicit(&s->in_port, in_port, memory_order_release);
    atomic_store_explicit(&s->out_port, out_port, memory_order_release);
}

/* The next input message: its size (0: none), its bytes, the start of the cycle that carried it
   and its own frame time (JACK microseconds). One reader thread. */
uint32_t ijm_read(ijm_state *s, ijm_time *time_us, ijm_time *at_us, unsigned char *data) {
    ijm_record *record = ring_peek(&s->in);
    if (record == NULL) return 0;
    uint32_t size = record->size;
    *time_us = record->time_us;
    *at_us = record->at_us;
    memcpy(data, record->data, size);
    ring_pop(&s->in);
    return size;
}

/* Up to `room` clock pulse frame times (JACK microseconds), oldest first; returns how many. One
   reader at a time. */
uint32_t ijm_read_pulses(ijm_state *s, ijm_time *times_us, uint32_t room) {
    ijm_pulse_ring *ring = &s->pulses;
    uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    uint32_t found = 0;
    while (head + found != tail && found < room) {
        times_us[found] = ring->items[(head + found) & (IJM_PULSES - 1)];
        found++;
    }
    atomic_store_explicit(&ring->head, head + found, memory_order_release);
    return found;
}

/* Queue a message due at `due_us` (JACK microseconds, 0: now). One sender at a time. -1: too long
   or the ring is full (counted). */
int ijm_send(ijm_state *s, ijm_time due_us, const unsigned char *data, uint32_t size) {
    if (size == 0 || size > IJM_MAX_BYTES) return -1;
    if (due_us != 0 && due_us < s->last_due_us) due_us = s->last_due_us;
    if (due_us != 0) s->last_due_us = due_us;
    ijm_record record = {due_us, 0, size, {0}};
    memcpy(record.data, data, size);
    if (ring_push(&s->out, &record) != 0) {
        atomic_fetch_add_explicit(&s->counters[IJM_DROPPED_OUT], 1, memory_order_relaxed);
        return -1;
    }
    return 0;
}

/* Up to `room` starts of late cycles, newest first (JACK microseconds); returns how many. */
uint32_t ijm_late_cycles(ijm_state *s, ijm_time *starts, uint32_t room) {
    uint64_t n = atomic_load_explicit(&s->late_count, memory_order_acquire);
    uint32_t found = 0;
    while (found < room && found < IJM_LATE && found < n) {
        starts[found] = atomic_load_explicit(&s->late_us[(n - 1 - found) & (IJM_LATE - 1)], memory_order_relaxed);
        found++;
    }
    return found;
}

/* Messages sent but not yet written to the port. */
uint64_t ijm_unsent(ijm_state *s) {
    return atomic_load_explicit(&s->out.tail, memory_order_acquire) -
           atomic_load_explicit(&s->out.head, memory_order_acquire);
}

uint64_t ijm_counter(ijm_state *s, int which) {
    if (which < 0 || which >= IJM_COUNTERS) return 0;
    return atomic_load_explicit(&s->counters[which], memory_order_acquire);
}

/* The JACK time at the start of the last cycle that wrote output (0: none yet). */
ijm_time ijm_last_out_us(ijm_state *s) {
    return atomic_load_explicit(&s->last_out_us, memory_order_acquire);
}
