//! Ports for processes that must come back on the same ones (a `cairn dev` restarted on
//! its folder, a member restarted on its address), where binding `:0` and reading the
//! address back is not enough.

/// A base port with `count` free TCP and UDP ports from it, below the kernel's ephemeral
/// range so that no client socket of this or another test takes one of them while the
/// processes start or are down (`cairn_chaos_tests::ports`).
pub fn free_ports(count: u16) -> u16 {
    cairn_chaos_tests::ports::reserve(count).expect("free loopback ports")
}
