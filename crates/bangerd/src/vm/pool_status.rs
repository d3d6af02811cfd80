//! The pools as `daemon status` and `doctor` show them: each pool's ready clones, its
//! size and their memory, and what kept it short.

use std::collections::HashMap;

use banger_wire::api::{NetPolicy, PoolInfo};

use super::pool::PoolState;
use super::{lock, Manager};

/// Every pool, and the totals over the pooled VMs.
pub struct PoolStatus {
    /// Pooled VMs, ready or being made.
    pub vms: u32,
    /// Their VMMs' PSS, in KiB.
    pub pss_kib: u64,
    pub pools: Vec<PoolInfo>,
}

impl Manager {
    /// Every pool with clones or a size to keep for a current warm snapshot, and the
    /// memory (PSS) of its clones.
    pub fn pool_status(&self) -> PoolStatus {
        let entries = self.store.pool_entries().unwrap_or_default();
        let mut held: HashMap<&str, (u32, u64)> = HashMap::new();
        let mut pss_total = 0;
        for e in &entries {
            let pss = self
                .slot(&e.vm_id)
                .runtime()
                .and_then(|rt| super::process::pss_kib(rt.launched.pid))
                .unwrap_or(0);
            pss_total += pss;
            let pool = held.entry(e.machine.as_str()).or_default();
            pool.0 += u32::from(e.ready);
            pool.1 += pss;
        }
        let states: Vec<(String, PoolState)> = lock(&self.pools)
            .iter()
            .map(|(key, state)| (key.clone(), state.clone()))
            .collect();
        let mut pools: Vec<PoolInfo> = states
            .into_iter()
            .filter_map(|(key, s)| {
                let target = self.pool_target(&s.machine.image);
                let clones = held.get(key.as_str()).copied();
                let warm = || {
                    self.warm_snapshots(&s.machine, true)
                        .is_ok_and(|w| !w.is_empty())
                };
                if clones.is_none() && (target == 0 || !warm()) {
                    return None;
                }
                let (ready, pss_kib) = clones.unwrap_or_default();
                Some(PoolInfo {
                    image: s.machine.image,
                    backend: s.machine.backend,
                    vcpu: s.machine.vcpu,
                    memory_mib: s.machine.memory_mib,
                    custom_policy: s.policy != NetPolicy::default(),
                    ready,
                    target: target as u32,
                    pss_kib,
                    short_of_memory: s.short_of_memory,
                    refill_failures: s.failures,
                    last_error: s.last_error,
                })
            })
            .collect();
        pools.sort_by(|a, b| {
            (&a.image, a.vcpu, a.memory_mib, a.custom_policy).cmp(&(
                &b.image,
                b.vcpu,
                b.memory_mib,
                b.custom_policy,
            ))
        });
        PoolStatus {
            vms: entries.len() as u32,
            pss_kib: pss_total,
            pools,
        }
    }
}
