use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

#[tokio::test(start_paused = true)]
async fn a_server_that_will_not_drain_is_dropped_at_the_deadline() {
    let started = tokio::time::Instant::now();

    let result: Result<(), ()> = common::shutdown::serve_with_bounded_drain(
        std::future::ready(()),
        Duration::from_secs(7),
        |_signal| std::future::pending(), // a server that ignores its shutdown signal
    )
    .await;

    assert_eq!(result, Ok(()));
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_drains_quickly_returns_as_soon_as_it_is_done() {
    let signalled = Arc::new(AtomicBool::new(false));
    let seen = signalled.clone();
    let started = tokio::time::Instant::now();

    let result: Result<(), ()> = common::shutdown::serve_with_bounded_drain(
        tokio::time::sleep(Duration::from_secs(1)),
        Duration::from_secs(30),
        |signal| async move {
            signal.await;
            seen.store(true, Ordering::SeqCst);
            Ok(())
        },
    )
    .await;

    assert_eq!(result, Ok(()));
    assert!(signalled.load(Ordering::SeqCst));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}
