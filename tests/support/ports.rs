//! Ports for processes that must come back on the same ones (a `cairn dev` restarted on
//! its folder), where binding `:0` and reading the address back is not enough.

/// A base port with `count` free TCP and UDP ports from it, below Linux's ephemeral range
/// (32768 and up) so no client connection of this or another test takes one of them while
/// the processes start.
pub fn free_ports(count: u16) -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for attempt in 0..1000u32 {
        let base = 20_000 + (seed.wrapping_add(attempt.wrapping_mul(7_919)) % 12_000) as u16;
        let free = (base..base + count).all(|port| {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports between 20000 and 32000");
}
