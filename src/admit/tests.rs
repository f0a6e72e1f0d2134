//! Unit tests of the gate (`mod.rs`): the rules' order and charging, the
//! slots it hands out; and helpers the other files' tests share.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::*;
use crate::config::Rate;

/// Polls once, without a runtime's timer: pending now means pending.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn no_limits() -> Limits {
    Limits {
        max_sessions: None,
        max_per_source: None,
        rate: None,
        rate_per_source: None,
        source_prefix_v6: 64,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// A TCP client at `ip`.
fn peer(ip: IpAddr) -> Peer {
    Peer::Ip(std::net::SocketAddr::new(ip, 40000))
}

/// A network, or an address as its one-address network, as the config
/// reads them.
pub(super) fn net(text: &str) -> IpNet {
    text.parse()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .expect("a network or an address")
}

pub(super) fn access(allow: &[&str], deny: &[&str]) -> Access {
    Access {
        allow: allow.iter().copied().map(net).collect(),
        deny: deny.iter().copied().map(net).collect(),
        ..Access::default()
    }
}

fn gate(limits: Limits, access: Access) -> Arc<Gate> {
    Gate::new("test", &limits, &access)
}

/// The refusal of a connection from `peer` at `now`, if any; an admitted
/// connection's slot is given back at once.
fn refused(gate: &Arc<Gate>, peer: &str, now: Instant) -> Option<Refusal> {
    gate.admit(&self::peer(ip(peer)), now).err()
}

fn v4(n: usize) -> IpAddr {
    let n = u32::try_from(n).expect("a small number");
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

impl Gate {
    fn sources(&self) -> usize {
        self.lock().sources.len()
    }

    fn busy(&self) -> usize {
        self.lock().sources.busy()
    }

    fn sessions_from(&self, peer: &str) -> usize {
        let source = Source::of(ip(peer).to_canonical(), self.v6_mask);
        self.lock().sources.sessions(source)
    }
}

#[test]
fn an_ipv4_mapped_peer_is_its_ipv4_address() {
    let now = Instant::now();
    let gate = gate(
        Limits {
            max_per_source: Some(1),
            ..no_limits()
        },
        // A rule written IPv4-mapped applies to IPv4 peers too.
        access(
            &["127.0.0.0/8", "::ffff:192.0.2.0/120"],
            &["::ffff:127.0.0.3"],
        ),
    );
    assert_eq!(refused(&gate, "::ffff:127.0.0.1", now), None);
    assert_eq!(refused(&gate, "192.0.2.9", now), None);
    assert_eq!(
        refused(&gate, "127.0.0.3", now),
        Some(Refusal::Denied(net("::ffff:127.0.0.3/128")))
    );
    assert_eq!(
        refused(&gate, "::ffff:10.0.0.1", now),
        Some(Refusal::NotAllowed)
    );
    // One source, however written.
    let _held = gate.admit(&peer(ip("127.0.0.1")), now).expect("admitted");
    assert_eq!(
        refused(&gate, "::ffff:127.0.0.1", now),
        Some(Refusal::MaxPerSource)
    );
}

#[test]
fn ipv6_sources_are_grouped_by_the_service_prefix() {
    let now = Instant::now();
    let by_48 = gate(
        Limits {
            max_per_source: Some(1),
            source_prefix_v6: 48,
            ..no_limits()
        },
        Access::default(),
    );
    let _b = by_48
        .admit(&peer(ip("2001:db8::1")), now)
        .expect("admitted");
    assert_eq!(
        refused(&by_48, "2001:db8:0:ffff::1", now),
        Some(Refusal::MaxPerSource)
    );
    assert_eq!(refused(&by_48, "2001:db8:1::1", now), None);
}

#[test]
fn the_service_bucket_refuses_past_its_burst() {
    let t0 = Instant::now();
    let gate = gate(
        Limits {
            rate: Some(Rate {
                per_second: 1.0,
                burst: 3,
            }),
            ..no_limits()
        },
        Access::default(),
    );
    for n in 0..3 {
        assert_eq!(gate.admit(&peer(v4(n)), t0).err(), None, "burst {n}");
    }
    assert_eq!(gate.admit(&peer(v4(9)), t0).err(), Some(Refusal::Rate));
    let one = t0 + Duration::from_secs(1);
    assert_eq!(gate.admit(&peer(v4(9)), one).err(), None);
    assert_eq!(gate.admit(&peer(v4(9)), one).err(), Some(Refusal::Rate));
}

#[test]
fn one_flooding_source_is_refused_while_others_are_admitted() {
    let t0 = Instant::now();
    let gate = gate(
        Limits {
            rate_per_source: Some(Rate {
                per_second: 1.0,
                burst: 2,
            }),
            ..no_limits()
        },
        Access::default(),
    );
    assert_eq!(refused(&gate, "192.0.2.1", t0), None);
    assert_eq!(refused(&gate, "192.0.2.1", t0), None);
    for _ in 0..100 {
        assert_eq!(
            refused(&gate, "192.0.2.1", t0),
            Some(Refusal::RatePerSource)
        );
    }
    assert_eq!(refused(&gate, "192.0.2.2", t0), None);
    assert_eq!(refused(&gate, "192.0.2.2", t0), None);
    assert_eq!(
        refused(&gate, "192.0.2.2", t0),
        Some(Refusal::RatePerSource)
    );
    // The flood's refusals took nothing: one second gives one token.
    let one = t0 + Duration::from_secs(1);
    assert_eq!(refused(&gate, "192.0.2.1", one), None);
    assert_eq!(
        refused(&gate, "192.0.2.1", one),
        Some(Refusal::RatePerSource)
    );
}

/// The order of charging: a refused connection takes no token, so one
/// source past its own limits cannot drain the service's bucket.
#[test]
fn a_refusal_takes_no_token() {
    let t0 = Instant::now();
    let gate = gate(
        Limits {
            rate: Some(Rate {
                per_second: 1.0,
                burst: 4,
            }),
            rate_per_source: Some(Rate {
                per_second: 1.0,
                burst: 1,
            }),
            max_per_source: Some(1),
            ..no_limits()
        },
        Access::default(),
    );
    let a = gate.admit(&peer(ip("192.0.2.1")), t0).expect("admitted");
    for _ in 0..50 {
        assert_eq!(
            refused(&gate, "192.0.2.1", t0),
            Some(Refusal::RatePerSource)
        );
    }
    // A source at its session cap, with a token to spare, keeps it.
    let later = t0 + Duration::from_secs(10);
    for _ in 0..50 {
        assert_eq!(
            refused(&gate, "192.0.2.1", later),
            Some(Refusal::MaxPerSource)
        );
    }
    drop(a);
    let _a = gate
        .admit(&peer(ip("192.0.2.1")), later)
        .expect("its token");
    // The service's bucket refilled to 4, lost nothing to the refusals
    // and gave one to the source.
    for n in 0..3 {
        assert_eq!(gate.admit(&peer(v4(n)), later).err(), None, "source {n}");
    }
    // Refused by the service's bucket: the source's is not charged.
    for _ in 0..50 {
        assert_eq!(refused(&gate, "192.0.2.9", later), Some(Refusal::Rate));
    }
    let next = later + Duration::from_secs(1);
    assert_eq!(refused(&gate, "192.0.2.9", next), None);
}

#[test]
fn a_source_slot_comes_back_on_drop_in_any_order() {
    let now = Instant::now();
    let gate = gate(
        Limits {
            max_per_source: Some(3),
            ..no_limits()
        },
        Access::default(),
    );
    let mut a: Vec<SourceSlot> = (0..3)
        .map(|_| gate.admit(&peer(ip("192.0.2.1")), now).expect("admitted"))
        .collect();
    assert_eq!(
        refused(&gate, "192.0.2.1", now),
        Some(Refusal::MaxPerSource)
    );
    let mut b: Vec<SourceSlot> = (0..2)
        .map(|_| gate.admit(&peer(ip("2001:db8::1")), now).expect("admitted"))
        .collect();
    assert_eq!((gate.sessions_from("192.0.2.1"), gate.busy()), (3, 2));

    drop(a.remove(1));
    assert_eq!(gate.sessions_from("192.0.2.1"), 2);
    a.push(
        gate.admit(&peer(ip("192.0.2.1")), now)
            .expect("a slot came back"),
    );
    drop(b.remove(0));
    drop(a.remove(2));
    drop(a.remove(0));
    assert_eq!(
        (
            gate.sessions_from("192.0.2.1"),
            gate.sessions_from("2001:db8::5")
        ),
        (1, 1)
    );
    drop(b);
    assert_eq!((gate.sources(), gate.busy()), (1, 1));
    drop(a);
    // Without a per-source rate, an entry goes with its last session.
    assert_eq!((gate.sources(), gate.busy()), (0, 0));
}

#[test]
fn the_service_cap_pauses_until_a_slot_drops() {
    let gate = gate(
        Limits {
            max_sessions: Some(2),
            ..no_limits()
        },
        Access::default(),
    );
    let mut first = pin!(gate.slot());
    let Poll::Ready(a) = poll_once(first.as_mut()) else {
        panic!("a free slot is immediate");
    };
    let _b = match poll_once(pin!(gate.slot())) {
        Poll::Ready(slot) => slot,
        Poll::Pending => panic!("a free slot is immediate"),
    };
    let mut third = pin!(gate.slot());
    assert!(poll_once(third.as_mut()).is_pending());
    assert!(poll_once(third.as_mut()).is_pending());
    drop(a);
    assert!(poll_once(third.as_mut()).is_ready());

    let uncapped = Gate::new("free", &no_limits(), &Access::default());
    let slots: Vec<_> = (0..1000)
        .map(|_| poll_once(pin!(uncapped.slot())))
        .collect();
    assert!(slots.iter().all(Poll::is_ready));
}

#[tokio::test]
async fn a_cancelled_wait_for_the_service_cap_takes_no_slot() {
    let gate = gate(
        Limits {
            max_sessions: Some(1),
            ..no_limits()
        },
        Access::default(),
    );
    let a = gate.slot().await;
    assert!(poll_once(pin!(gate.slot())).is_pending());
    drop(a);
    let _b = gate.slot().await;
    assert!(poll_once(pin!(gate.slot())).is_pending());
}

#[test]
fn refusal_logs_are_rate_limited_and_count_what_they_skip() {
    let t0 = Instant::now();
    let gate = gate(no_limits(), Access::default());
    for _ in 0..5 {
        assert_eq!(gate.log_refusal(t0), Some(0));
    }
    for _ in 0..100 {
        assert_eq!(gate.log_refusal(t0), None);
    }
    assert_eq!(gate.log_refusal(t0 + Duration::from_millis(500)), None);
    let one = t0 + Duration::from_secs(1);
    assert_eq!(gate.log_refusal(one), Some(101));
    assert_eq!(gate.log_refusal(one), None);
    let hour = t0 + Duration::from_secs(3600);
    assert_eq!(gate.log_refusal(hour), Some(1));
    for _ in 0..4 {
        assert_eq!(gate.log_refusal(hour), Some(0));
    }
    assert_eq!(gate.log_refusal(hour), None);
}

#[test]
fn same_rules_compares_limits_and_access() {
    let limits = Limits {
        max_sessions: Some(10),
        rate: Some(Rate {
            per_second: 5.0,
            burst: 10,
        }),
        ..no_limits()
    };
    let rules = access(&["127.0.0.0/8"], &[]);
    let gate = Gate::new("echo", &limits, &rules);
    assert!(gate.same_rules(&limits, &rules));
    let faster = Limits {
        rate: Some(Rate {
            per_second: 6.0,
            burst: 10,
        }),
        ..limits.clone()
    };
    assert!(!gate.same_rules(&faster, &rules));
    let wider = Limits {
        source_prefix_v6: 48,
        ..limits.clone()
    };
    assert!(!gate.same_rules(&wider, &rules));
    assert!(!gate.same_rules(&limits, &access(&["127.0.0.0/8", "::1"], &[])));
    assert!(!gate.same_rules(&limits, &Access::default()));
}

#[test]
fn refusals_name_their_rule() {
    let cases = [
        (
            Refusal::Denied(net("10.0.0.0/8")),
            "deny",
            "source denied by 10.0.0.0/8",
        ),
        (Refusal::NotAllowed, "allow", "source not in the allow list"),
        (Refusal::Rate, "rate", "service rate limit exceeded"),
        (
            Refusal::RatePerSource,
            "rate_per_source",
            "source rate limit exceeded",
        ),
        (
            Refusal::MaxPerSource,
            "max_per_source",
            "too many sessions from this source",
        ),
    ];
    for (refusal, rule, text) in cases {
        assert_eq!((refusal.rule(), refusal.to_string().as_str()), (rule, text));
    }
}
