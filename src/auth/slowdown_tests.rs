use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy() -> SlowdownPolicy {
    SlowdownPolicy {
        free_failures: 2,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
        forget_after: Duration::from_secs(60),
        max_peers: 4,
    }
}

#[test]
fn repeated_failures_from_one_address_get_doubling_delays_up_to_the_cap() {
    let s = LoginSlowdown::new(policy());
    let t0 = Instant::now();
    let a = ip("192.0.2.1");
    let delays: Vec<u64> = (0..8)
        .map(|i| {
            s.record_failure(a, t0 + Duration::from_millis(i))
                .as_millis() as u64
        })
        .collect();
    assert_eq!(delays, [0, 0, 100, 200, 400, 800, 1000, 1000]);
    assert_eq!(s.delayed_total(), 6);
    assert_eq!(s.delay_for(a, t0), Duration::from_millis(1000));
    assert_eq!(s.failures(a, t0), 8);
}

#[test]
fn other_addresses_are_never_delayed_by_one_that_fails() {
    let s = LoginSlowdown::new(policy());
    let t0 = Instant::now();
    for _ in 0..10 {
        s.record_failure(ip("192.0.2.1"), t0);
    }
    let other = ip("192.0.2.2");
    assert_eq!(s.delay_for(other, t0), Duration::ZERO);
    assert_eq!(
        s.record_failure(other, t0),
        Duration::ZERO,
        "its own first failure"
    );
    // The port is not part of the key, the address is: the same host on any port is one peer.
    let v6 = ip("2001:db8::1");
    for _ in 0..3 {
        s.record_failure(v6, t0);
    }
    assert_eq!(s.failures(ip("2001:db8::ffff:1"), t0), 3, "same /64");
    assert_eq!(s.failures(ip("2001:db8:0:1::1"), t0), 0, "another /64");
    assert_eq!(
        s.failures(ip("::ffff:192.0.2.2"), t0),
        1,
        "IPv4-mapped is the IPv4 address"
    );
}

#[test]
fn an_address_is_forgotten_after_a_quiet_period() {
    let s = LoginSlowdown::new(policy());
    let t0 = Instant::now();
    let a = ip("192.0.2.1");
    for _ in 0..5 {
        s.record_failure(a, t0);
    }
    let later = t0 + Duration::from_secs(60);
    assert_eq!(s.delay_for(a, later), Duration::ZERO);
    assert_eq!(s.record_failure(a, later), Duration::ZERO, "starts afresh");
    assert_eq!(s.failures(a, later), 1);
    // Failing again before the quiet period ends keeps the record.
    let b = ip("192.0.2.9");
    for i in 0..5 {
        s.record_failure(b, t0 + Duration::from_secs(50 * i));
    }
    assert_eq!(s.failures(b, t0 + Duration::from_secs(200)), 5);
}

#[test]
fn the_table_is_bounded_dropping_forgotten_then_oldest_entries() {
    let s = LoginSlowdown::new(policy());
    let t0 = Instant::now();
    for i in 0..1000u32 {
        let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        s.record_failure(a, t0 + Duration::from_millis(u64::from(i)));
        assert!(s.tracked_peers() <= 4, "at most max_peers");
    }
    assert_eq!(s.tracked_peers(), 4);
    // The newest four are kept, the oldest were evicted.
    assert_eq!(s.failures(ip("10.0.3.231"), t0), 1);
    assert_eq!(s.failures(ip("10.0.0.0"), t0), 0);
    // Forgotten entries go first and are swept when the period has passed.
    let later = t0 + Duration::from_secs(120);
    s.record_failure(ip("192.0.2.1"), later);
    assert_eq!(s.tracked_peers(), 1);
}

#[test]
fn forget_clears_an_address_and_a_zero_cap_turns_it_off() {
    let s = LoginSlowdown::new(policy());
    let t0 = Instant::now();
    let a = ip("192.0.2.1");
    for _ in 0..5 {
        s.record_failure(a, t0);
    }
    assert!(s.forget(a));
    assert_eq!(s.record_failure(a, t0), Duration::ZERO);
    let off = LoginSlowdown::new(SlowdownPolicy {
        max_delay: Duration::ZERO,
        ..policy()
    });
    for _ in 0..10 {
        assert_eq!(off.record_failure(a, t0), Duration::ZERO);
    }
    assert_eq!(off.tracked_peers(), 0);
}

#[test]
fn delays_never_overflow() {
    let p = SlowdownPolicy {
        initial_delay: Duration::from_secs(u64::MAX / 2),
        max_delay: Duration::MAX,
        ..policy()
    };
    assert_eq!(p.delay_after(u32::MAX), Duration::MAX);
    assert_eq!(
        SlowdownPolicy::default().delay_after(1000),
        Duration::from_secs(3)
    );
}
