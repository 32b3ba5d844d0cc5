//! Pod wiring over rtnetlink: veth pairs, addresses, routes, neighbours.
