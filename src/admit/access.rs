//! Who may connect: a service's `deny` and `allow` rules, as matched
//! against an IP peer, and its `allow_uid` and `allow_gid`, against a Unix
//! socket peer's credentials. Not here: the other rules, and the order of
//! all of them (the gate, [`super::Gate::admit`]).

use std::net::IpAddr;

use ipnet::Ipv4Net;

use super::{IdLists, Refusal};
use crate::config::{Access, IpNet};
use crate::peer::Credentials;

/// A service's access rules, ready to match canonical peers (an
/// IPv4-mapped IPv6 address taken as the IPv4 address it carries).
#[derive(Debug)]
pub(super) struct Rules {
    /// `access.deny` as matched (IPv4-mapped rules as IPv4), each with the
    /// rule as written, to name it in a refusal.
    deny: Vec<(IpNet, IpNet)>,
    /// `access.allow` as matched.
    allow: Vec<IpNet>,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
}

impl Rules {
    pub(super) fn new(access: &Access) -> Self {
        Self {
            deny: access
                .deny
                .iter()
                .map(|net| (canonical_net(*net), *net))
                .collect(),
            allow: access.allow.iter().copied().map(canonical_net).collect(),
            allow_uid: access.allow_uid.clone(),
            allow_gid: access.allow_gid.clone(),
        }
    }

    /// Whether a Unix socket client with these credentials may connect:
    /// with both lists empty, every client (the file's mode chose who can
    /// connect at all); otherwise its effective user must be in
    /// `allow_uid` or its effective group in `allow_gid`.
    pub(super) fn check_credentials(&self, peer: &Credentials) -> Result<(), Refusal> {
        if self.allow_uid.is_empty() && self.allow_gid.is_empty() {
            return Ok(());
        }
        if self.allow_uid.contains(&peer.uid) || self.allow_gid.contains(&peer.gid) {
            return Ok(());
        }
        Err(Refusal::IdNotAllowed(IdLists {
            uid: !self.allow_uid.is_empty(),
            gid: !self.allow_gid.is_empty(),
        }))
    }

    /// Whether the canonical `peer` may connect: not if a `deny` rule holds
    /// it (deny wins), nor if `allow` is not empty and does not hold it.
    pub(super) fn check(&self, peer: IpAddr) -> Result<(), Refusal> {
        if let Some((_, written)) = self.deny.iter().find(|(net, _)| net.contains(&peer)) {
            return Err(Refusal::Denied(*written));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&peer)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

/// A rule as matched against canonical peers: an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps (`10.0.0.0/8`).
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::tests::{access, net};

    /// The refusal of `peer`, if any, as the gate asks.
    fn refused(rules: &Rules, peer: &str) -> Option<Refusal> {
        let peer: IpAddr = peer.parse().expect("an address");
        rules.check(peer.to_canonical()).err()
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = Rules::new(&access(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.0.0.3", "2001:db8::bad"],
        ));
        assert_eq!(
            refused(&rules, "10.0.0.3"),
            Some(Refusal::Denied(net("10.0.0.3/32")))
        );
        assert_eq!(
            refused(&rules, "2001:db8::bad"),
            Some(Refusal::Denied(net("2001:db8::bad/128")))
        );
        assert_eq!(refused(&rules, "10.0.0.4"), None);
        assert_eq!(refused(&rules, "2001:db8::1"), None);
        assert_eq!(refused(&rules, "192.168.1.1"), Some(Refusal::NotAllowed));
        assert_eq!(refused(&rules, "::1"), Some(Refusal::NotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_every_source_not_denied() {
        let open = Rules::new(&Access::default());
        for peer in ["127.0.0.1", "192.0.2.7", "::1", "2001:db8::1"] {
            assert_eq!(refused(&open, peer), None, "{peer}");
        }
        let deny_only = Rules::new(&access(&[], &["192.0.2.0/24"]));
        assert_eq!(
            refused(&deny_only, "192.0.2.200").map(|r| r.rule()),
            Some("deny")
        );
        assert_eq!(refused(&deny_only, "198.51.100.1"), None);
    }

    #[test]
    fn a_unix_client_needs_its_user_or_its_group_allowed() {
        let peer = |uid, gid| Credentials {
            uid,
            gid,
            pid: None,
        };
        let rules = |uids: &[u32], gids: &[u32]| {
            Rules::new(&Access {
                allow_uid: uids.to_vec(),
                allow_gid: gids.to_vec(),
                ..Access::default()
            })
        };
        let open = rules(&[], &[]);
        assert_eq!(open.check_credentials(&peer(1000, 1000)), Ok(()));
        let users = rules(&[0, 1000], &[]);
        assert_eq!(users.check_credentials(&peer(1000, 5)), Ok(()));
        let refused = users
            .check_credentials(&peer(1001, 0))
            .expect_err("not in allow_uid");
        assert_eq!(refused.rule(), "allow_uid");
        let groups = rules(&[], &[100]);
        assert_eq!(groups.check_credentials(&peer(1001, 100)), Ok(()));
        let refused = groups
            .check_credentials(&peer(0, 0))
            .expect_err("not in allow_gid");
        assert_eq!(refused.rule(), "allow_gid");
        // Either list admits.
        let both = rules(&[0], &[100]);
        assert_eq!(both.check_credentials(&peer(0, 5)), Ok(()));
        assert_eq!(both.check_credentials(&peer(7, 100)), Ok(()));
        let refused = both.check_credentials(&peer(7, 5)).expect_err("in neither");
        assert_eq!(refused.rule(), "allow_uid,allow_gid");
        assert_eq!(
            refused.to_string(),
            "neither the user is in allow_uid nor the group in allow_gid"
        );
    }

    #[test]
    fn a_rule_written_ipv4_mapped_matches_ipv4_peers() {
        let rules = Rules::new(&access(
            &["127.0.0.0/8", "::ffff:192.0.2.0/120"],
            &["::ffff:127.0.0.3"],
        ));
        assert_eq!(refused(&rules, "::ffff:127.0.0.1"), None);
        assert_eq!(refused(&rules, "192.0.2.9"), None);
        assert_eq!(
            refused(&rules, "127.0.0.3"),
            Some(Refusal::Denied(net("::ffff:127.0.0.3/128")))
        );
        assert_eq!(
            refused(&rules, "::ffff:10.0.0.1"),
            Some(Refusal::NotAllowed)
        );
        // A prefix shorter than the mapped range's stays IPv6.
        assert_eq!(canonical_net(net("::ffff:0:0/95")), net("::ffff:0:0/95"));
    }
}
