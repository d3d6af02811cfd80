//! `banger prune`: deletes what nothing running needs, each with the lock its own
//! delete takes.
//!
//! - VMs that are stopped or crashed (a create still under way is left alone);
//! - every snapshot that is not an image's warm snapshot: a clone copies its
//!   snapshot's disk and loads its memory when it is made (a deleted memory file stays
//!   mapped), so no VM needs one afterwards;
//! - the images no VM or kept snapshot is built on, except the configured default
//!   image (rebuilding it takes minutes), each with its warm snapshots. Warm snapshots
//!   of kept images stay: they are caches that `image warm` manages.

use std::collections::HashSet;

use banger_wire::api::PruneReport;

use crate::error::DaemonError;
use crate::vm::{stopped, Manager};

/// Prunes (or with `dry_run` only lists) stopped VMs, snapshots and unused images.
pub async fn prune(m: &Manager, dry_run: bool) -> Result<PruneReport, DaemonError> {
    let mut report = PruneReport {
        dry_run,
        ..Default::default()
    };
    for rec in m.store.list_vms()?.into_iter().filter(stopped) {
        let gone = match dry_run {
            true => Ok(true),
            false => m.delete_if_stopped(&rec.id).await,
        };
        match gone {
            Ok(true) => report.vms.push(rec.name),
            Ok(false) => {}
            Err(e) => report.failed.push(format!("vm {}: {e}", rec.name)),
        }
    }
    let snapshots = m.store.list_snapshots()?;
    for snap in snapshots.iter().filter(|s| !s.warm) {
        let gone = match dry_run {
            true => Ok(()),
            false => m.snapshot_delete(&snap.id).await,
        };
        match gone {
            Ok(()) => report.snapshots.push(snap.name.clone()),
            Err(DaemonError::SnapshotNotFound(_)) => {}
            Err(e) => report.failed.push(format!("snapshot {}: {e}", snap.name)),
        }
    }
    for image in unused_images(m, &report)? {
        let warm: Vec<String> = snapshots
            .iter()
            .filter(|s| s.warm && s.image == image)
            .map(|s| s.name.clone())
            .collect();
        let gone = match dry_run {
            true => Ok(()),
            false => super::image::delete(m, &image).await,
        };
        match gone {
            Ok(()) => {
                report.snapshots.extend(warm);
                report.images.push(image);
            }
            Err(e) => report.failed.push(format!("image {image}: {e}")),
        }
    }
    prune_layers(m, &mut report)?;
    if !dry_run {
        tracing::info!(
            layers = report.layers.len(),
            vms = report.vms.len(),
            snapshots = report.snapshots.len(),
            images = report.images.len(),
            failed = report.failed.len(),
            "pruned"
        );
    }
    Ok(report)
}

/// Removes the cached registry layers that no image left after `report` was made of.
fn prune_layers(m: &Manager, report: &mut PruneReport) -> Result<(), DaemonError> {
    let gone: HashSet<&String> = report.images.iter().collect();
    let images = crate::image::list(&m.paths).map_err(|e| DaemonError::image("*", e))?;
    let used: HashSet<String> = images
        .iter()
        .filter(|i| !gone.contains(&i.name().to_string()))
        .flat_map(|i| i.manifest().layers().to_vec())
        .collect();
    let cache = crate::image::LayerCache::new(&m.paths.cache_dir);
    match cache.prune(&used, report.dry_run) {
        Ok(Some(layers)) => report.layers = layers,
        Ok(None) => report
            .failed
            .push("layer cache: a pull is under way; its layers were kept".into()),
        Err(e) => report.failed.push(format!("layer cache: {e}")),
    }
    Ok(())
}

/// The images that no VM and no snapshot that `report` leaves is built on, but the
/// default image.
fn unused_images(m: &Manager, report: &PruneReport) -> Result<Vec<String>, DaemonError> {
    let pruned_vms: HashSet<&String> = report.vms.iter().collect();
    let pruned_snaps: HashSet<&String> = report.snapshots.iter().collect();
    let mut used: HashSet<String> = m
        .store
        .list_vms()?
        .into_iter()
        .filter(|v| !pruned_vms.contains(&v.name))
        .map(|v| v.image)
        .collect();
    used.extend(
        m.store
            .list_snapshots()?
            .into_iter()
            .filter(|s| !s.warm && !pruned_snaps.contains(&s.name))
            .map(|s| s.image),
    );
    used.insert(m.config.default_image.clone());
    let images = crate::image::list(&m.paths).map_err(|e| DaemonError::image("*", e))?;
    Ok(images
        .iter()
        .map(|i| i.name().to_string())
        .filter(|name| !used.contains(name))
        .collect())
}

#[cfg(test)]
mod tests {
    use banger_wire::api::VmState;

    use super::*;
    use crate::image::{test_image_dir as image_dir, test_inputs as inputs};
    use crate::store::{SnapshotRecord, VmRecord};
    use crate::vm::{test_manager as manager, test_vm as vm};

    fn add_image(m: &Manager, name: &str) {
        let dir = m.paths.images_dir().join(name);
        fs_err::create_dir_all(&dir).unwrap();
        image_dir(&dir, name, inputs());
    }

    fn add_snapshot(m: &Manager, name: &str, image: &str, warm: bool) {
        let id = format!("id-{name}");
        fs_err::create_dir_all(m.paths.state_dir.join("snapshots").join(&id)).unwrap();
        m.store
            .insert_snapshot(&SnapshotRecord {
                id,
                name: name.into(),
                vm_name: "gone".into(),
                image: image.into(),
                image_digest: "sha256:00".into(),
                backend: banger_wire::api::Backend::Qemu,
                vcpu: 1,
                memory_mib: 256,
                disk_size_mib: 1024,
                no_network: true,
                token: "t".into(),
                created_at: String::new(),
                paused_ms: 1,
                warm,
            })
            .unwrap();
    }

    fn image_names(m: &Manager) -> Vec<String> {
        let images = crate::image::list(&m.paths).unwrap();
        images.iter().map(|i| i.name().to_string()).collect()
    }

    #[tokio::test]
    async fn images_go_when_nothing_left_uses_them_but_the_default_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        for image in ["default", "in-use", "old", "snapped"] {
            add_image(&m, image);
        }
        let running = VmRecord {
            id: "id-busy".into(),
            name: "busy".into(),
            image: "in-use".into(),
            state: VmState::Running,
            ..vm("busy", None)
        };
        m.store.insert_vm(&running).unwrap();
        let stopped_vm = VmRecord {
            image: "old".into(),
            ..vm("idle", None)
        };
        m.store.insert_vm(&stopped_vm).unwrap();
        add_snapshot(&m, "base", "snapped", false);
        add_snapshot(&m, "warm-old", "old", true);
        add_snapshot(&m, "warm-default", "default", true);

        let dry = prune(&m, true).await.unwrap();
        let images_after_dry_run = image_names(&m);
        let done = prune(&m, false).await.unwrap();

        let expected = PruneReport {
            dry_run: true,
            vms: vec!["idle".into()],
            snapshots: vec!["base".into(), "warm-old".into()],
            images: vec!["old".into(), "snapped".into()],
            failed: vec![],
            layers: vec![],
        };
        assert_eq!(dry, expected);
        assert_eq!(
            images_after_dry_run,
            ["default", "in-use", "old", "snapped"]
        );
        assert_eq!(
            done,
            PruneReport {
                dry_run: false,
                ..expected
            }
        );
        assert_eq!(image_names(&m), ["default", "in-use"]);
        let snaps: Vec<String> = m
            .store
            .list_snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(snaps, ["warm-default"]);
    }
}
