//! Leader election on a `coordination.k8s.io/v1` Lease, so two controller
//! replicas never both act. kube-runtime has none; this is the usual
//! protocol: take the lease when it is free or expired, renew it while
//! leading, and rely on the API server's optimistic concurrency (a replace
//! with a stale resourceVersion gets 409) to settle races.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), duration }
    }

    /// Takes or renews the lease. `Ok(true)`: this replica leads until
    /// `duration` from now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let mine = current.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (current.renew_time, current.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => renewed.0 + Duration::from_secs(secs.max(0) as u64) < now,
            _ => true,
        };
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(spec(transitions, if mine { current.acquire_time } else { None }));
        // The replace carries the resourceVersion we read: a rival's write in
        // between makes it fail with 409, and the rival leads.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs `work` only while leading: it gets a token that is cancelled when
    /// leadership is lost or `shutdown` fires. Renews every third of the lease.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let every = (self.duration / 3).max(Duration::from_millis(100));
        let mut leading: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
        loop {
            let ok = match self.try_acquire_or_renew().await {
                Ok(ok) => ok,
                Err(e) => {
                    warn!(error = %e, "leader election: lease call failed");
                    false
                }
            };
            match (ok, leading.is_some()) {
                (true, false) => {
                    info!(identity = %self.identity, "became leader");
                    let token = shutdown.child_token();
                    leading = Some((token.clone(), tokio::spawn(work(token))));
                }
                (false, true) => {
                    warn!(identity = %self.identity, "lost leadership: stopping");
                    if let Some((token, task)) = leading.take() {
                        token.cancel();
                        let _ = task.await;
                    }
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if let Some((token, task)) = leading.take() {
            token.cancel();
            let _ = task.await;
        }
    }
}
