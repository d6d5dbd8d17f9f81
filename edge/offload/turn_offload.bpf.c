// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * umedge: the kernel fast path for TURN ChannelData over UDP (tc clsact ingress).
 *
 * The Python engine decides every rule and writes the two maps below; this program only moves
 * datagrams that match an entry whose expiry has not passed:
 *
 *   client -> peer: UDP from a client's 5-tuple at the TURN port carrying ChannelData on a bound
 *     channel loses its 4-byte header and leaves from the relay address/port to the peer.
 *   peer -> client: UDP from a peer to a relay port with a bound channel gains the ChannelData
 *     header and leaves from the TURN port to the client (no padding: RFC 8656 12.5, UDP).
 *
 * Past its expiry an entry drops what it matches (TC_ACT_SHOT, STAT_EXPIRED): the permission or the
 * channel lapsed, and the kernel enforces that even while user space is paused or behind. One
 * exception: a peer whose channel lapsed while its permission holds is passed to user space,
 * which relays it as a Data indication.
 *
 * Everything else returns TC_ACT_UNSPEC (the next filter, then the stack: user space sees it
 * unchanged): STUN, indications, unknown or expired channels, padded ChannelData, fragments, IP
 * options, IPv6, GSO packets, payloads over MAX_PAYLOAD. A ChannelData whose length field is
 * larger than its payload on a known channel is dropped here and counted (STAT_MALFORMED).
 *
 * The payload is moved in place (4 bytes left or right) and the tail trimmed or grown, so the
 * UDP header never moves: checksum offload state (CHECKSUM_PARTIAL on veth and loopback) stays
 * valid, and the UDP checksum is updated incrementally (pseudo-header fields flagged as such).
 * No kernel structure is read (only the __sk_buff UAPI context), so the object needs no CO-RE
 * relocations and loads on any kernel with bpf_redirect_neigh and bpf_check_mtu (5.12+).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_PAYLOAD 2048
#define MAX_ENTRIES 65536

#define IP_OFF ETH_HLEN
#define UDP_OFF (ETH_HLEN + sizeof(struct iphdr))
#define UDP_CSUM_OFF (UDP_OFF + offsetof(struct udphdr, check))
#define CSUM_FLAGS BPF_F_MARK_MANGLED_0

enum stat {
	STAT_TO_PEER = 0,      /* datagrams relayed client -> peer */
	STAT_TO_CLIENT = 1,    /* datagrams relayed peer -> client */
	STAT_MALFORMED = 2,    /* ChannelData length larger than the payload: dropped */
	STAT_EXPIRED = 3,      /* an entry past its expiry: dropped */
	STAT_PASSED = 4,       /* matched, but not for the fast path (padding, size, MTU): user space */
	STAT_ERRORS = 5,       /* a helper failed halfway: dropped */
	STAT_COUNT = 6,
};

/* All addresses and ports in network byte order; the channel number too. */
struct client_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct client_value {
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 relay_port;
	__u16 peer_port;
	__u32 ifindex; /* the device toward the peer; 0: the peer is local (deliver up the stack) */
	__u64 expires_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 packets;
	__u64 bytes;
};

struct peer_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct peer_value {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
	__u32 ifindex; /* the device toward the client; 0: local */
	__u32 pad2;
	__u64 expires_ns; /* channel, permission and allocation: relayed as ChannelData until then */
	__u64 permission_ns; /* permission and allocation: after this the peer is dropped */
	__u64 packets;
	__u64 bytes;
};

struct scratch {
	__u8 data[MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct client_key);
	__type(value, struct client_value);
} clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct peer_key);
	__type(value, struct peer_value);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct headers {
	struct udphdr udp;
	__u16 channel; /* the ChannelData header, when there is one */
	__u16 length;
};

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &index);

	if (value)
		*value += 1;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	__u16 *words = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The UDP checksum after the 5-tuple, the length and the ChannelData header changed. */
static __always_inline int update_udp_checksum(struct __sk_buff *skb, __u32 old_src, __u32 new_src,
					       __u32 old_dst, __u32 new_dst, __u16 old_len, __u16 new_len,
					       __u16 old_sport, __u16 new_sport, __u16 old_dport,
					       __u16 new_dport, __u16 old_channel, __u16 new_channel,
					       __u16 old_cdlen, __u16 new_cdlen)
{
	__u64 pseudo4 = CSUM_FLAGS | BPF_F_PSEUDO_HDR | 4, pseudo2 = CSUM_FLAGS | BPF_F_PSEUDO_HDR | 2;
	__u64 plain2 = CSUM_FLAGS | 2;

	if (bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_src, new_src, pseudo4) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dst, new_dst, pseudo4) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_len, new_len, pseudo2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_len, new_len, plain2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_sport, new_sport, plain2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dport, new_dport, plain2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_channel, new_channel, plain2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_cdlen, new_cdlen, plain2))
		return -1;
	return 0;
}

/* Rewrite the IP and UDP headers (the checksum field itself is left to update_udp_checksum). */
static __always_inline int write_headers(struct __sk_buff *skb, struct iphdr *ip, struct udphdr *udp)
{
	ip->check = ip_checksum(ip);
	if (bpf_skb_store_bytes(skb, IP_OFF, ip, sizeof(*ip), BPF_F_RECOMPUTE_CSUM))
		return -1;
	/* source, dest, len: the first 6 bytes; check was updated in place */
	return bpf_skb_store_bytes(skb, UDP_OFF, udp, 6, BPF_F_RECOMPUTE_CSUM);
}

static __always_inline int leave(__u32 ifindex)
{
	if (!ifindex)
		return TC_ACT_OK; /* a local destination: up the stack to its socket */
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

static __always_inline int to_peer(struct __sk_buff *skb, struct iphdr *ip, struct headers *h,
				   struct client_value *entry, __u32 udp_len)
{
	__u32 length = bpf_ntohs(h->length), zero = 0;
	__u32 available = udp_len - sizeof(struct udphdr) - 4;
	struct scratch *buffer;

	if (length > available) {
		count(STAT_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (bpf_ktime_get_ns() > entry->expires_ns) {
		count(STAT_EXPIRED);
		return TC_ACT_SHOT;
	}
	if (length != available || length - 1 >= MAX_PAYLOAD) { /* 1..MAX_PAYLOAD, one unsigned test */
		count(STAT_PASSED);
		return TC_ACT_UNSPEC;
	}
	buffer = bpf_map_lookup_elem(&scratch, &zero);
	if (!buffer)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, UDP_OFF + sizeof(struct udphdr) + 4, buffer->data, length))
		return TC_ACT_UNSPEC;
	/* From here on the packet is being changed: a failure drops it. */
	__u16 old_len = h->udp.len, new_len = bpf_htons(udp_len - 4);
	__u32 old_src = ip->saddr, old_dst = ip->daddr;
	__u16 old_sport = h->udp.source, old_dport = h->udp.dest;

	if (bpf_skb_store_bytes(skb, UDP_OFF + sizeof(struct udphdr), buffer->data, length, BPF_F_RECOMPUTE_CSUM))
		goto error;
	if (update_udp_checksum(skb, old_src, entry->relay_ip, old_dst, entry->peer_ip, old_len, new_len,
				old_sport, entry->relay_port, old_dport, entry->peer_port, h->channel, 0,
				h->length, 0))
		goto error;
	ip->saddr = entry->relay_ip;
	ip->daddr = entry->peer_ip;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) - 4);
	h->udp.source = entry->relay_port;
	h->udp.dest = entry->peer_port;
	h->udp.len = new_len;
	if (write_headers(skb, ip, &h->udp))
		goto error;
	if (bpf_skb_change_tail(skb, ETH_HLEN + bpf_ntohs(ip->tot_len), 0))
		goto error;
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, length);
	count(STAT_TO_PEER);
	return leave(entry->ifindex);
error:
	count(STAT_ERRORS);
	return TC_ACT_SHOT;
}

static __always_inline int to_client(struct __sk_buff *skb, struct iphdr *ip, struct headers *h,
				     struct peer_value *entry, __u32 udp_len)
{
	__u32 length = udp_len - sizeof(struct udphdr), zero = 0, mtu = 0;
	struct scratch *buffer;

	__u64 now = bpf_ktime_get_ns();

	if (now > entry->expires_ns) {
		if (now <= entry->permission_ns) {
			count(STAT_PASSED); /* the channel lapsed, the permission holds: a Data indication */
			return TC_ACT_UNSPEC;
		}
		count(STAT_EXPIRED);
		return TC_ACT_SHOT;
	}
	if (length - 1 >= MAX_PAYLOAD ||
	    (entry->ifindex && bpf_check_mtu(skb, entry->ifindex, &mtu, 4, 0))) {
		count(STAT_PASSED);
		return TC_ACT_UNSPEC;
	}
	buffer = bpf_map_lookup_elem(&scratch, &zero);
	if (!buffer)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, UDP_OFF + sizeof(struct udphdr), buffer->data, length))
		return TC_ACT_UNSPEC;
	__u16 old_len = h->udp.len, new_len = bpf_htons(udp_len + 4);
	__u32 old_src = ip->saddr, old_dst = ip->daddr;
	__u16 old_sport = h->udp.source, old_dport = h->udp.dest;
	__u16 header[2] = {entry->channel, bpf_htons(length)};

	if (bpf_skb_change_tail(skb, ETH_HLEN + bpf_ntohs(ip->tot_len) + 4, 0))
		goto error;
	if (bpf_skb_store_bytes(skb, UDP_OFF + sizeof(struct udphdr) + 4, buffer->data, length,
				BPF_F_RECOMPUTE_CSUM))
		goto error;
	if (bpf_skb_store_bytes(skb, UDP_OFF + sizeof(struct udphdr), header, sizeof(header), BPF_F_RECOMPUTE_CSUM))
		goto error;
	if (update_udp_checksum(skb, old_src, entry->server_ip, old_dst, entry->client_ip, old_len, new_len,
				old_sport, entry->server_port, old_dport, entry->client_port, 0, header[0], 0,
				header[1]))
		goto error;
	ip->saddr = entry->server_ip;
	ip->daddr = entry->client_ip;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) + 4);
	h->udp.source = entry->server_port;
	h->udp.dest = entry->client_port;
	h->udp.len = new_len;
	if (write_headers(skb, ip, &h->udp))
		goto error;
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, length);
	count(STAT_TO_CLIENT);
	return leave(entry->ifindex);
error:
	count(STAT_ERRORS);
	return TC_ACT_SHOT;
}

SEC("tc")
int turn_offload(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct headers h = {};
	__u32 ip_len, udp_len;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_size)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)))
		return TC_ACT_UNSPEC;
	if (ip.ihl != 5 || ip.version != 4 || ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(0x3fff)))
		return TC_ACT_UNSPEC; /* options, fragments, not UDP */
	ip_len = bpf_ntohs(ip.tot_len);
	if (ip_len < sizeof(ip) + sizeof(struct udphdr) || ETH_HLEN + ip_len > skb->len)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, UDP_OFF, &h.udp, sizeof(h.udp)))
		return TC_ACT_UNSPEC;
	udp_len = bpf_ntohs(h.udp.len);
	if (udp_len < sizeof(struct udphdr) || udp_len != ip_len - sizeof(ip))
		return TC_ACT_UNSPEC;

	if (udp_len >= sizeof(struct udphdr) + 4 &&
	    !bpf_skb_load_bytes(skb, UDP_OFF + sizeof(struct udphdr), &h.channel, 4) &&
	    (bpf_ntohs(h.channel) & 0xc000) == 0x4000) {
		struct client_key key = {ip.saddr, ip.daddr, h.udp.source, h.udp.dest, h.channel, 0};
		struct client_value *entry = bpf_map_lookup_elem(&clients, &key);

		if (entry)
			return to_peer(skb, &ip, &h, entry, udp_len);
	}
	struct peer_key key = {ip.saddr, ip.daddr, h.udp.source, h.udp.dest};
	struct peer_value *entry = bpf_map_lookup_elem(&peers, &key);

	if (entry) {
		h.channel = 0;
		h.length = 0;
		return to_client(skb, &ip, &h, entry, udp_len);
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
