//! Facts about a network interface, asked of the kernel through a socket of
//! the calling thread's network namespace.
//!
//! Not through `/sys/class/net`: sysfs shows the namespace of whoever
//! mounted it, which is not the caller's under `nsenter --net` or in a
//! thread that entered another namespace with [`crate::netns::run_in`].

use std::{io, os::fd::AsRawFd as _};

/// An interface query that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} of interface {iface:?}")]
pub struct LinkError {
    /// What was asked.
    pub op: &'static str,
    /// The interface.
    pub iface: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

pub(crate) fn ifreq(iface: &str, op: &'static str) -> Result<libc::ifreq, LinkError> {
    let err = |source| LinkError {
        op,
        iface: iface.to_owned(),
        source,
    };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = iface.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes without NUL",
        )));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn ioctl(iface: &str, op: &'static str, request: libc::c_ulong) -> Result<libc::ifreq, LinkError> {
    let mut req = ifreq(iface, op)?;
    ioctl_with(iface, op, request, &mut req)?;
    Ok(req)
}

/// `request` on `req` (named for `iface`) through a socket of the calling
/// thread's namespace.
fn ioctl_with(
    iface: &str,
    op: &'static str,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
) -> Result<(), LinkError> {
    let err = |source| LinkError {
        op,
        iface: iface.to_owned(),
        source,
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
        .map_err(err)?;
    // SAFETY: `req` is a valid ifreq for the SIOC[GS]IF* requests made
    // here, which only read and write inside it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets `iface`'s MTU and brings it up.
pub fn set_mtu_up(iface: &str, mtu: u32) -> Result<(), LinkError> {
    let mut req = ifreq(iface, "set MTU")?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl_with(iface, "set MTU", libc::SIOCSIFMTU, &mut req)?;
    let mut req = ioctl(iface, "flags", libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl_with(iface, "set up", libc::SIOCSIFFLAGS, &mut req)
}

/// Interface index.
pub fn ifindex(iface: &str) -> Result<u32, LinkError> {
    let req = ioctl(iface, "index", libc::SIOCGIFINDEX)?;
    // SAFETY: SIOCGIFINDEX fills the ifindex member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// MTU.
pub fn mtu(iface: &str) -> Result<u32, LinkError> {
    let req = ioctl(iface, "MTU", libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU fills the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Hardware (MAC) address.
pub fn mac(iface: &str) -> Result<[u8; 6], LinkError> {
    let req = ioctl(iface, "MAC address", libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR fills the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut out = [0u8; 6];
    for (d, s) in out.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(out)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface that holds `ip` (the uplink, when the node's address is
/// all that is configured). `Ok(None)` when no interface has it.
pub fn holding(ip: std::net::Ipv4Addr) -> io::Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr of its family.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: AF_INET addresses are sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        if std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_bad_names_are_refused() {
        assert!(ifindex("lo").expect("lo exists") >= 1);
        assert!(mtu("lo").expect("lo has an MTU") >= 1280);
        let e = ifindex("no-such-if0").expect_err("must not exist");
        assert!(e.to_string().contains("no-such-if0"), "{e}");
        assert!(ifindex("a-name-that-is-too-long").is_err());
        assert!(ifindex("").is_err());
    }

    #[test]
    fn the_interface_holding_an_address_is_found() {
        assert_eq!(
            holding(std::net::Ipv4Addr::LOCALHOST).unwrap().as_deref(),
            Some("lo")
        );
        // TEST-NET-1 is on no interface of a test machine.
        assert_eq!(
            holding(std::net::Ipv4Addr::new(192, 0, 2, 213)).unwrap(),
            None
        );
    }
}
