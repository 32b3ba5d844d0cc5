//! TC return codes and the single exit every program goes through: exactly
//! one counter per packet, and a drop always has a named reason.

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};
use overlay_common::Stat;

use crate::maps::count;

/// Let the packet continue through the stack, untouched.
pub const OK: i32 = TC_ACT_OK;
/// The packet was redirected by a helper.
pub const REDIRECT: i32 = TC_ACT_REDIRECT;
/// Drop.
pub const SHOT: i32 = TC_ACT_SHOT;

/// What a program decided: the TC action and the counter it bumps, or the
/// reason for dropping.
pub type Verdict = Result<(i32, Stat), Stat>;

/// Turns a verdict into the TC action, bumping its counter.
#[inline(always)]
pub fn finish(v: Verdict) -> i32 {
    match v {
        Ok((action, stat)) => {
            count(stat);
            action
        }
        Err(reason) => {
            count(reason);
            SHOT
        }
    }
}

/// Checks a redirect helper's return value.
#[inline(always)]
pub fn redirected(rc: i64) -> Result<i32, Stat> {
    if rc as i32 == REDIRECT {
        Ok(REDIRECT)
    } else {
        Err(Stat::DropRedirectFailed)
    }
}
