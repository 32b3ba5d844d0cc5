//! The two IPv4 route shapes the wiring uses, added and recognised.
//!
//! Both live in the main table with protocol `static` (what
//! [`RouteMessageBuilder`] sets), like routes added by hand.

use std::net::Ipv4Addr;

use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope},
};

use super::NetlinkError;

/// A route the wiring adds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route<'a> {
    /// `dst/32 dev ifname scope link`.
    Link {
        /// The destination host.
        dst: Ipv4Addr,
        /// The output interface.
        ifindex: u32,
        /// Its name, for messages.
        ifname: &'a str,
    },
    /// `default via gateway dev ifname`.
    DefaultVia {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The output interface.
        ifindex: u32,
        /// Its name, for messages.
        ifname: &'a str,
    },
}

impl std::fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link { dst, ifname, .. } => write!(f, "{dst}/32 dev {ifname} scope link"),
            Self::DefaultVia {
                gateway, ifname, ..
            } => write!(f, "default via {gateway} dev {ifname}"),
        }
    }
}

impl Route<'_> {
    fn message(&self) -> RouteMessage {
        match *self {
            Self::Link { dst, ifindex, .. } => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .output_interface(ifindex)
                .scope(RouteScope::Link)
                .build(),
            Self::DefaultVia {
                gateway, ifindex, ..
            } => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(ifindex)
                .build(),
        }
    }

    /// Adds the route; it must not exist yet.
    pub(super) async fn add(&self, handle: &Handle, netns: &str) -> Result<(), NetlinkError> {
        handle
            .route()
            .add(self.message())
            .execute()
            .await
            .map_err(|source| NetlinkError::AddRoute {
                route: self.to_string(),
                netns: netns.to_owned(),
                source: source.into(),
            })
    }

    /// Whether `routes` holds this route in the main table.
    pub(super) fn is_in(&self, routes: &[RouteMessage]) -> bool {
        routes.iter().any(|r| self.matches(r))
    }

    fn matches(&self, r: &RouteMessage) -> bool {
        let (dst, prefix, gateway, ifindex) = match *self {
            Self::Link { dst, ifindex, .. } => (Some(dst), 32, None, ifindex),
            Self::DefaultVia {
                gateway, ifindex, ..
            } => (None, 0, Some(gateway), ifindex),
        };
        let addr = |want: fn(&RouteAttribute) -> Option<&RouteAddress>| {
            r.attributes.iter().find_map(want).and_then(|a| match a {
                RouteAddress::Inet(ip) => Some(*ip),
                _ => None,
            })
        };
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        r.header.table == RouteHeader::RT_TABLE_MAIN
            && r.header.destination_prefix_length == prefix
            && addr(|a| match a {
                RouteAttribute::Destination(d) => Some(d),
                _ => None,
            }) == dst
            && addr(|a| match a {
                RouteAttribute::Gateway(g) => Some(g),
                _ => None,
            }) == gateway
            && oif == Some(ifindex)
    }
}

/// All IPv4 routes of every table.
pub(super) async fn dump(handle: &Handle, netns: &str) -> Result<Vec<RouteMessage>, NetlinkError> {
    let dump = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    super::session::collect("IPv4 routes", netns, dump).await
}
