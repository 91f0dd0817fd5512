//! End-to-end tests live in tests/tests; this crate only hosts them. They may
//! depend on every crate (and on the third-party peers in tests/peers); no
//! product crate depends on this one or on tests/kube-fake.
