//! How routes found on the platform reach the proxy without the platform
//! knowing the proxy: Kubernetes discovery and the embedded API push the
//! whole current set through a [`RouteSink`]; the proxy implements it.

use crate::spec::RouteSpec;

pub trait RouteSink: Send + Sync {
    /// Replaces every platform route with `routes`. Routes from the proxy's
    /// own config file stay, and keep their hostnames when both claim one.
    fn set_routes(&self, routes: Vec<RouteSpec>);
}
