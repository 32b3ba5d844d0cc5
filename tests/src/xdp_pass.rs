//! An XDP program that passes every frame, attached in native (driver)
//! mode to a device in a lab namespace: the bench's measure of what any
//! XDP program on the uplink costs before it has done anything.
//!
//! Decapsulating VXLAN in XDP, before GRO, would let plain TCP GRO merge
//! the inner flow instead of the UDP-tunnel GRO chain. On a physical NIC
//! XDP runs on the driver's receive buffer. On a veth it runs on the
//! skb the peer sent, and veth copies every frame whose head is cloned,
//! not a page fragment or short of 256 bytes of headroom into a page of
//! its own first (`veth_convert_skb_to_xdp_buff`): every frame that TCP or
//! software GSO produced. The lab's `wire` underlay pays that copy, and
//! this program measures it.
//!
//! The program is two instructions (`r0 = XDP_PASS; exit`), loaded with
//! the `bpf` system call rather than from an object file, and attached
//! through a BPF link, so that closing [`XdpPass`] detaches it.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
};

use anyhow::{Context as _, Result, bail};

use crate::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: u64 = 2;

/// `r0 = XDP_PASS` (BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm in the high
/// half) and `exit` (BPF_JMP | BPF_EXIT), as little-endian `struct bpf_insn`.
const PROGRAM: [u64; 2] = [0xb7 | (XDP_PASS << 32), 0x95];

/// The attached program; dropping it detaches it.
pub struct XdpPass {
    _link: OwnedFd,
}

/// `union bpf_attr`, as the words of its first 128 bytes (more than any
/// command here uses; the kernel wants the rest zero).
type Attr = [u64; 16];

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, fully initialised buffer of the size we
    // pass, and the kernel only reads it for these commands.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), size_of::<Attr>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load() -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr: Attr = [0; 16];
    // prog_type (u32) and insn_cnt (u32), insns (u64), license (u64).
    attr[0] = u64::from(BPF_PROG_TYPE_XDP) | ((PROGRAM.len() as u64) << 32);
    attr[1] = PROGRAM.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // prog_ifindex (u32) at byte 64, expected_attach_type (u32) at 68.
    attr[8] = u64::from(BPF_XDP) << 32;
    bpf(BPF_PROG_LOAD, &attr)
}

fn link(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr: Attr = [0; 16];
    // prog_fd (u32) and target_ifindex (u32), attach_type (u32) and flags (u32).
    attr[0] = prog.as_raw_fd() as u64 | (u64::from(ifindex) << 32);
    attr[1] = u64::from(BPF_XDP) | (u64::from(XDP_FLAGS_DRV_MODE) << 32);
    bpf(BPF_LINK_CREATE, &attr)
}

/// Attaches the program to `dev` in `ns`, in native mode (generic XDP
/// would run after GRO and measure something else, so its absence is an
/// error, not a fallback).
pub fn attach(ns: &Netns, dev: &str) -> Result<XdpPass> {
    let path = ns.path();
    let name = CString::new(dev).context("device name")?;
    // setns changes only the calling thread: do it on one of our own.
    let link = thread::spawn(move || -> Result<OwnedFd> {
        let target = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a valid namespace file descriptor; this thread ends here.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("entering {}", path.display()));
        }
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no device {name:?} in {}", path.display());
        }
        let prog = load().context("loading an XDP_PASS program")?;
        link(&prog, ifindex).with_context(|| format!("attaching XDP (native mode) to {name:?}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
    Ok(XdpPass { _link: link })
}
