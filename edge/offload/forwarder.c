/* umedge's native UDP ChannelData forwarder: the relay's hot loop in C, in the node's own process.
 *
 * Why: a CPython relay pays the interpreter for every datagram on top of its two system calls
 * (README, "Relay performance"). This library moves bound-channel ChannelData between a client
 * and its peer in batches (recvmmsg, then sendto or sendmmsg) without returning to Python, and
 * hands every other datagram back to the engine unchanged. It decides nothing: the engine
 * (edge/turn/engine.py) writes one entry per bound channel whose permission holds, with the
 * expiry it computed (CLOCK_MONOTONIC ns), exactly as for the kernel fast path
 * (turn_offload.bpf.c, whose entry layout this file shares); the forwarder relays only before
 * that expiry and passes everything else up, where the engine gives it the RFC's treatment.
 *
 * Entries (byte layouts of edge/offload/mirror.py's ANY_FAMILY structs; the kernel path's are the
 * same with 4-byte addresses):
 *   clients: client ip, listener ip, client port, listener port, channel -> relay ip, peer ip,
 *            relay port, peer port, VIA = the relay socket's fd, expiry, packets, bytes
 *   peers:   peer ip, relay ip, peer port, relay port -> client ip, listener ip, client port,
 *            listener port, channel, VIA = the listener's fd, expiry, permitted, packets, bytes
 * Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d); they and the ports are in
 * network order. Both families: an IPv4 socket sends to a mapped address as IPv4.
 *
 * One forwarder per process; it is used from the event loop's thread only (no locking).
 * Built with `cc -O2 -shared -fPIC` on first start (edge/offload/native.py) and loaded with ctypes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define SLOT 65540 /* 4 bytes of ChannelData header room + the largest UDP payload */
#define MAX_KEY 40
#define MAX_VALUE 80
#define MAX_ENTRIES 65536
#define FIRST_CAPACITY 1024
#define MAX_IPV4_PAYLOAD 65507 /* a larger peer datagram cannot become ChannelData for an IPv4 client */

enum { TABLE_CLIENTS, TABLE_PEERS, TABLES };
enum { STAT_TO_PEER, STAT_TO_CLIENT, STAT_PASSED, STAT_ERRORS, STATS };

struct client_value {
	uint8_t relay_ip[16], peer_ip[16], relay_port[2], peer_port[2];
	uint32_t via;
	uint64_t expires, packets, bytes;
};

struct peer_value {
	uint8_t client_ip[16], server_ip[16], client_port[2], server_port[2], channel[2], pad[2];
	uint32_t via, pad2;
	uint64_t expires, permitted, packets, bytes;
};

_Static_assert(sizeof(struct client_value) == 64, "the client value is 64 bytes");
_Static_assert(sizeof(struct peer_value) == 80, "the peer value is 80 bytes");

enum { EMPTY, USED, GONE };

struct slot {
	uint8_t state;
	uint8_t key[MAX_KEY];
	uint8_t value[MAX_VALUE] __attribute__((aligned(8)));
};

struct table {
	struct slot *slots;
	uint32_t capacity, used, gone, key_size, value_size;
};

/* What Python reads back for a datagram it must handle: where it is and who sent it. */
struct passed {
	uint32_t offset, length;
	uint8_t ip[16]; /* IPv4 mapped */
	uint16_t port; /* host order */
	uint16_t pad;
};

struct forwarder {
	struct table tables[TABLES];
	uint64_t stats[STATS];
	uint8_t *buffers; /* BATCH slots of SLOT bytes; datagrams land 4 bytes in */
	struct mmsghdr messages[BATCH];
	struct iovec vectors[BATCH];
	struct sockaddr_in6 sources[BATCH]; /* or a struct sockaddr_in, on an IPv4 socket */
	struct mmsghdr out[BATCH];
	struct iovec out_vectors[BATCH];
	struct sockaddr_in6 destinations[BATCH];
	struct peer_value *queued[BATCH]; /* the entry of each datagram in `out`, counted once sent */
};

static uint64_t hash(const uint8_t *key, uint32_t size)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (uint32_t i = 0; i < size; i++)
		h = (h ^ key[i]) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static struct slot *find(struct table *t, const uint8_t *key, int for_insert)
{
	uint32_t mask = t->capacity - 1, i = (uint32_t)hash(key, t->key_size) & mask;
	struct slot *reusable = NULL;
	for (uint32_t probes = 0; probes < t->capacity; probes++, i = (i + 1) & mask) {
		struct slot *s = &t->slots[i];
		if (s->state == EMPTY)
			return for_insert ? (reusable ? reusable : s) : NULL;
		if (s->state == GONE) {
			if (!reusable)
				reusable = s;
		} else if (!memcmp(s->key, key, t->key_size)) {
			return s;
		}
	}
	return for_insert ? reusable : NULL;
}

static int resize(struct table *t, uint32_t capacity)
{
	struct slot *old = t->slots;
	uint32_t old_capacity = t->capacity;
	struct slot *slots = calloc(capacity, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	t->slots = slots;
	t->capacity = capacity;
	t->used = t->gone = 0;
	for (uint32_t i = 0; i < old_capacity; i++) {
		if (old[i].state != USED)
			continue;
		struct slot *s = find(t, old[i].key, 1);
		*s = old[i];
		t->used++;
	}
	free(old);
	return 0;
}

void *fw_new(void)
{
	struct forwarder *fw = calloc(1, sizeof(*fw));
	if (!fw)
		return NULL;
	uint32_t sizes[TABLES][2] = {{40, sizeof(struct client_value)}, {36, sizeof(struct peer_value)}};
	for (int i = 0; i < TABLES; i++) {
		fw->tables[i].key_size = sizes[i][0];
		fw->tables[i].value_size = sizes[i][1];
		if (resize(&fw->tables[i], FIRST_CAPACITY))
			goto fail;
	}
	fw->buffers = malloc((size_t)BATCH * SLOT);
	if (!fw->buffers)
		goto fail;
	for (int i = 0; i < BATCH; i++) {
		fw->vectors[i].iov_base = fw->buffers + (size_t)i * SLOT + 4;
		fw->vectors[i].iov_len = SLOT - 4;
		fw->messages[i].msg_hdr.msg_iov = &fw->vectors[i];
		fw->messages[i].msg_hdr.msg_iovlen = 1;
		fw->out[i].msg_hdr.msg_iov = &fw->out_vectors[i];
		fw->out[i].msg_hdr.msg_iovlen = 1;
		fw->out[i].msg_hdr.msg_name = &fw->destinations[i];
	}
	return fw;
fail:
	for (int i = 0; i < TABLES; i++)
		free(fw->tables[i].slots);
	free(fw);
	return NULL;
}

void fw_free(void *handle)
{
	struct forwarder *fw = handle;
	if (!fw)
		return;
	for (int i = 0; i < TABLES; i++)
		free(fw->tables[i].slots);
	free(fw->buffers);
	free(fw);
}

/* 0, -EINVAL for an unknown table, -ENOSPC past MAX_ENTRIES, -ENOMEM. */
int fw_update(void *handle, int table, const uint8_t *key, const uint8_t *value)
{
	struct forwarder *fw = handle;
	if (table < 0 || table >= TABLES)
		return -EINVAL;
	struct table *t = &fw->tables[table];
	struct slot *s = find(t, key, 0);
	if (!s) {
		if (t->used >= MAX_ENTRIES)
			return -ENOSPC;
		if ((t->used + t->gone + 1) * 2 > t->capacity) {
			uint32_t capacity = (t->used + 1) * 4 > t->capacity ? t->capacity * 2 : t->capacity;
			int error = resize(t, capacity); /* grows, or only sweeps tombstones */
			if (error)
				return error;
		}
		s = find(t, key, 1);
		if (s->state == GONE)
			t->gone--;
		s->state = USED;
		memcpy(s->key, key, t->key_size);
		t->used++;
	}
	memcpy(s->value, value, t->value_size);
	return 0;
}

/* 1 and the value copied out, or 0 when absent. */
int fw_lookup(void *handle, int table, const uint8_t *key, uint8_t *value)
{
	struct forwarder *fw = handle;
	if (table < 0 || table >= TABLES)
		return -EINVAL;
	struct slot *s = find(&fw->tables[table], key, 0);
	if (!s)
		return 0;
	memcpy(value, s->value, fw->tables[table].value_size);
	return 1;
}

/* 1 if an entry went, 0 if there was none. */
int fw_delete(void *handle, int table, const uint8_t *key)
{
	struct forwarder *fw = handle;
	if (table < 0 || table >= TABLES)
		return -EINVAL;
	struct table *t = &fw->tables[table];
	struct slot *s = find(t, key, 0);
	if (!s)
		return 0;
	s->state = GONE;
	t->used--;
	t->gone++;
	return 1;
}

int fw_entries(void *handle, int table)
{
	struct forwarder *fw = handle;
	return table >= 0 && table < TABLES ? (int)fw->tables[table].used : -EINVAL;
}

void fw_stats(void *handle, uint64_t *out)
{
	memcpy(out, ((struct forwarder *)handle)->stats, sizeof(((struct forwarder *)handle)->stats));
}

/* Where the datagrams of the last batch are: struct passed's offsets count from here. */
/* How many datagrams one call reads and describes at most (the Python side sizes its arrays by it). */
int fw_batch(void)
{
	return BATCH;
}

uint8_t *fw_buffers(void *handle)
{
	return ((struct forwarder *)handle)->buffers;
}

static uint64_t monotonic_ns(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

static const uint8_t MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* A datagram's source as 16 address bytes (IPv4 mapped) and 2 port bytes; 0 for another family or a
 * scoped (link-local) IPv6 source, which entries cannot name: the engine handles those. */
static int source_of(const struct sockaddr_in6 *source, uint8_t *ip, uint8_t *port)
{
	if (source->sin6_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)source;
		memcpy(ip, MAPPED, 12);
		memcpy(ip + 12, &v4->sin_addr, 4);
		memcpy(port, &v4->sin_port, 2);
		return 1;
	}
	if (source->sin6_family == AF_INET6 && !source->sin6_scope_id) {
		memcpy(ip, &source->sin6_addr, 16);
		memcpy(port, &source->sin6_port, 2);
		return 1;
	}
	return 0;
}

/* The socket address to send to from a socket of `family`: IPv4 for a mapped address on an IPv4 socket;
 * IPv6 otherwise (a dual-stack IPv6 listener reaches an IPv4 client at its mapped address). */
static socklen_t destination(struct sockaddr_in6 *out, const uint8_t *ip, const uint8_t *port, int family)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET && !memcmp(ip, MAPPED, 12)) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)out;
		v4->sin_family = AF_INET;
		memcpy(&v4->sin_addr, ip + 12, 4);
		memcpy(&v4->sin_port, port, 2);
		return sizeof(*v4);
	}
	out->sin6_family = AF_INET6;
	memcpy(&out->sin6_addr, ip, 16);
	memcpy(&out->sin6_port, port, 2);
	return sizeof(*out);
}

/* Read up to BATCH datagrams; the count, 0 with *drained set when there was nothing, or -errno. */
static int receive(struct forwarder *fw, int fd, int *drained)
{
	for (int i = 0; i < BATCH; i++) {
		fw->messages[i].msg_hdr.msg_name = &fw->sources[i];
		fw->messages[i].msg_hdr.msg_namelen = sizeof(fw->sources[i]);
		fw->messages[i].msg_hdr.msg_flags = 0;
	}
	int n = recvmmsg(fd, fw->messages, BATCH, MSG_DONTWAIT, NULL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			*drained = 1;
			return 0;
		}
		return -errno; /* e.g. a queued ICMP error: the caller reads on */
	}
	*drained = n < BATCH;
	return n;
}

static void pass(struct forwarder *fw, struct passed *out, int *count, int i)
{
	struct passed *p = &out[(*count)++];
	uint8_t port[2] = {0, 0};
	p->offset = (uint32_t)i * SLOT + 4;
	p->length = fw->messages[i].msg_len;
	if (fw->sources[i].sin6_family == AF_INET6) { /* scoped ones too: the engine answers them */
		memcpy(p->ip, &fw->sources[i].sin6_addr, 16);
		memcpy(port, &fw->sources[i].sin6_port, 2);
	} else if (!source_of(&fw->sources[i], p->ip, port)) {
		memset(p->ip, 0, sizeof(p->ip));
	}
	p->port = (uint16_t)(port[0] << 8 | port[1]);
	fw->stats[STAT_PASSED]++;
}

/* Datagrams on a client listener (bound to listener_ip:listener_port, 16 + 2 bytes): bound-channel
 * ChannelData goes to its peer from the relay socket; the rest is described in `out` (at most BATCH)
 * for the engine. Returns how many are in `out`, or -errno. */
int fw_from_clients(void *handle, int fd, const uint8_t *listener_ip, const uint8_t *listener_port,
		    struct passed *out, int *drained)
{
	struct forwarder *fw = handle;
	int n = receive(fw, fd, drained), count = 0;
	if (n <= 0)
		return n;
	uint64_t now = monotonic_ns();
	struct table *clients = &fw->tables[TABLE_CLIENTS];
	uint8_t key[40]; /* client ip, listener ip, client port, listener port, channel, padding */
	memcpy(key + 16, listener_ip, 16);
	memcpy(key + 34, listener_port, 2);
	key[38] = key[39] = 0;
	for (int i = 0; i < n; i++) {
		uint8_t *data = fw->buffers + (size_t)i * SLOT + 4;
		uint32_t size = fw->messages[i].msg_len;
		if (size < 4 || (data[0] & 0xC0) != 0x40 || !source_of(&fw->sources[i], key, key + 32)) {
			pass(fw, out, &count, i);
			continue;
		}
		uint32_t length = (uint32_t)data[2] << 8 | data[3];
		memcpy(key + 36, data, 2);
		struct slot *s = find(clients, key, 0);
		struct client_value *v = s ? (struct client_value *)s->value : NULL;
		if (!v || length > size - 4 || now >= v->expires) { /* unbound, short or lapsed: the engine's call */
			pass(fw, out, &count, i);
			continue;
		}
		struct sockaddr_in6 peer;
		/* a relay socket's family is its peers': IPv4 relays send to mapped peers as IPv4 */
		socklen_t peer_size = destination(&peer, v->peer_ip, v->peer_port,
						  memcmp(v->peer_ip, MAPPED, 12) ? AF_INET6 : AF_INET);
		if (sendto((int)v->via, data + 4, length, MSG_DONTWAIT, (struct sockaddr *)&peer, peer_size) < 0) {
			fw->stats[STAT_ERRORS]++; /* a full buffer or an unreachable peer: UDP may drop */
			continue;
		}
		v->packets++;
		v->bytes += length;
		fw->stats[STAT_TO_PEER]++;
	}
	return count;
}

/* Send the queued ChannelData to clients: one sendmmsg per run of datagrams for the same listener; each
 * one sent is counted in its entry. A datagram the kernel refuses (too large, unreachable) is skipped and
 * counted as an error; a full socket buffer drops the rest of the run, as UDP may. */
static void flush(struct forwarder *fw, int via, int queued)
{
	int sent = 0;
	while (sent < queued) {
		int n = sendmmsg(via, fw->out + sent, (unsigned)(queued - sent), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
			fw->stats[STAT_ERRORS] += (uint64_t)(queued - sent);
			return;
		}
		if (n <= 0) { /* this one failed: skip it, send the others */
			fw->stats[STAT_ERRORS]++;
			sent++;
			continue;
		}
		for (int i = sent; i < sent + n; i++) {
			fw->queued[i]->packets++;
			fw->queued[i]->bytes += fw->out_vectors[i].iov_len - 4;
		}
		fw->stats[STAT_TO_CLIENT] += (uint64_t)n;
		sent += n;
	}
}


/* Datagrams on a relay socket (bound to relay_ip:relay_port, 16 + 2 bytes): from a peer with a bound
 * channel they go to the client as ChannelData (no padding over UDP, RFC 8656 §12.5); the rest is
 * described in `out` for the engine (Data indications, lapsed channels, strangers). Returns the
 * count or -errno. */
int fw_from_peers(void *handle, int fd, const uint8_t *relay_ip, const uint8_t *relay_port,
		  struct passed *out, int *drained)
{
	struct forwarder *fw = handle;
	int n = receive(fw, fd, drained), count = 0, queued = 0, via = -1;
	if (n <= 0)
		return n;
	uint64_t now = monotonic_ns();
	struct table *peers = &fw->tables[TABLE_PEERS];
	uint8_t key[36]; /* peer ip, relay ip, peer port, relay port */
	memcpy(key + 16, relay_ip, 16);
	memcpy(key + 34, relay_port, 2);
	for (int i = 0; i < n; i++) {
		uint32_t size = fw->messages[i].msg_len;
		if (size > MAX_IPV4_PAYLOAD - 4 || !source_of(&fw->sources[i], key, key + 32)) {
			pass(fw, out, &count, i);
			continue;
		}
		struct slot *s = find(peers, key, 0);
		struct peer_value *v = s ? (struct peer_value *)s->value : NULL;
		if (!v || now >= v->expires) { /* no channel (any more): a Data indication or a drop upstairs */
			pass(fw, out, &count, i);
			continue;
		}
		if (queued && (int)v->via != via) {
			flush(fw, via, queued);
			queued = 0;
		}
		via = (int)v->via;
		uint8_t *frame = fw->buffers + (size_t)i * SLOT;
		memcpy(frame, v->channel, 2);
		frame[2] = (uint8_t)(size >> 8);
		frame[3] = (uint8_t)size;
		/* the listener's family is its bound address's: mapped for an IPv4 socket, else IPv6 (:: included) */
		fw->out[queued].msg_hdr.msg_namelen = destination(&fw->destinations[queued], v->client_ip, v->client_port,
								   memcmp(v->server_ip, MAPPED, 12) ? AF_INET6 : AF_INET);
		fw->out_vectors[queued].iov_base = frame;
		fw->out_vectors[queued].iov_len = size + 4;
		fw->queued[queued] = v;
		queued++;
	}
	if (queued)
		flush(fw, via, queued);
	return count;
}
