//! Applies banger's nftables ruleset (see [`super::nat`]) with `nft`, and IPv4 forwarding.
//!
//! `nft` runs as a child of the calling thread, so it acts in that thread's network
//! namespace.

use std::net::Ipv4Addr;
use std::path::Path;

use nftables::helper::{self, NftablesError, DEFAULT_NFT};
use nftables::schema::Nftables;
use serde_json::Value;

use super::nat::{self, NftTable, PortForward};
use super::{isolation, Guest, NetError, Subnet};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn wrap(what: &str) -> impl FnOnce(NftablesError) -> NetError + '_ {
    move |source| match source {
        NftablesError::NftFailed { stderr, .. } => NetError::NftFailed {
            what: what.to_string(),
            stderr: stderr.trim().to_string(),
        },
        source => NetError::Nft {
            what: what.to_string(),
            source,
        },
    }
}

async fn apply(ruleset: &Nftables<'_>, what: &str) -> Result<(), NetError> {
    helper::apply_ruleset_async(ruleset)
        .await
        .map_err(wrap(what))
}

/// Creates the bridge's tables if needed and (re)writes their base rules, in one
/// transaction.
pub async fn install_base(table: &NftTable, subnet: Subnet, bridge: &str) -> Result<(), NetError> {
    let what = format!("install table ip {}", table.name());
    let mut doc = serde_json::to_value(table.base_ruleset(subnet, bridge)).map_err(|e| {
        NetError::NftOutput {
            detail: e.to_string(),
        }
    })?;
    if let Some(objects) = doc["nftables"].as_array_mut() {
        objects.extend(table.dns_limit_objects(bridge));
    }
    helper::apply_ruleset_raw_async(&doc.to_string(), DEFAULT_NFT, std::iter::empty::<&str>())
        .await
        .map(drop)
        .map_err(wrap(&what))
}

/// Installs one VM's port forwards, replacing any it had (with none, does nothing), in
/// one transaction: a failure leaves the old ones in place.
pub async fn add_forwards(
    table: &NftTable,
    vm_id: &str,
    guest_ip: Ipv4Addr,
    forwards: &[PortForward],
) -> Result<(), NetError> {
    let ruleset = table.vm_forward_ruleset(vm_id, guest_ip, forwards)?;
    // Nothing to replace without forwards: a detach removed the VM's last ones, and a
    // restart prunes those of VMs that are gone (this saves an `nft` run per create).
    if forwards.is_empty() {
        return Ok(());
    }
    let mut objects = match removal(table, vm_id).await? {
        Some(old) => old.objects.into_owned(),
        None => Vec::new(),
    };
    objects.extend(ruleset.objects.iter().cloned());
    let replace = Nftables {
        objects: objects.into(),
    };
    apply(&replace, &format!("add port forwards of vm {vm_id}")).await
}

/// Removes one VM's port forwards; nothing to remove is not an error.
pub async fn remove_forwards(table: &NftTable, vm_id: &str) -> Result<(), NetError> {
    match removal(table, vm_id).await? {
        Some(ruleset) => apply(&ruleset, &format!("remove port forwards of vm {vm_id}")).await,
        None => Ok(()),
    }
}

/// What removes one VM's port forwards, as installed now; `None` when it has none.
async fn removal(table: &NftTable, vm_id: &str) -> Result<Option<Nftables<'static>>, NetError> {
    let chain = nat::vm_chain(vm_id)?;
    let Some(listing) = list_table(table).await? else {
        return Ok(None);
    };
    let found = TableListing::parse(&listing)?;
    let jumps: Vec<(String, u32)> = found
        .tagged_rules
        .iter()
        .filter(|r| nat::vm_of_tag(&r.comment) == Some(vm_id))
        .map(|r| (r.chain.clone(), r.handle))
        .collect();
    let has_chain = found.chains.contains(&chain);
    if jumps.is_empty() && !has_chain {
        return Ok(None);
    }
    Ok(Some(table.vm_removal_ruleset(
        &jumps,
        has_chain.then_some(chain.as_str()),
    )))
}

/// The VMs that have port forwards installed, for pruning those of VMs that are gone.
pub async fn vms_with_forwards(table: &NftTable) -> Result<Vec<String>, NetError> {
    let Some(listing) = list_table(table).await? else {
        return Ok(Vec::new());
    };
    let found = TableListing::parse(&listing)?;
    let mut ids: Vec<String> = found
        .tagged_rules
        .iter()
        .filter_map(|r| nat::vm_of_tag(&r.comment).map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Rewrites the isolation sets for exactly these guests.
pub async fn set_guests(table: &NftTable, guests: &[Guest]) -> Result<(), NetError> {
    apply(
        &table.guests_ruleset(guests),
        "update guest isolation rules",
    )
    .await
}

/// Lets `guest` reach `addrs` for `secs` seconds.
pub async fn allow_egress(
    table: &NftTable,
    guest: Ipv4Addr,
    addrs: &[Ipv4Addr],
    secs: u32,
) -> Result<(), NetError> {
    let what = format!("allow egress of {guest}");
    apply(&table.egress_ruleset(guest, addrs, secs), &what).await
}

/// Forgets every egress address `guest` was given.
pub async fn forget_egress(table: &NftTable, guest: Ipv4Addr) -> Result<(), NetError> {
    let args = ["list", "set", "ip", table.name(), isolation::EGRESS];
    let json = match helper::get_current_ruleset_raw_async(DEFAULT_NFT, args).await {
        Ok(json) => json,
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(())
        }
        Err(e) => return Err(wrap("list egress set")(e)),
    };
    let pairs: Vec<(Ipv4Addr, Ipv4Addr)> = egress_pairs(&json)?
        .into_iter()
        .filter(|(g, _)| *g == guest)
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let what = format!("forget egress of {guest}");
    match apply(&table.egress_removal_ruleset(&pairs), &what).await {
        // An element that timed out in between is gone already.
        Err(NetError::NftFailed { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        other => other,
    }
}

/// The (guest, address) pairs of a `nft -j list set` of the egress set.
fn egress_pairs(json: &str) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, NetError> {
    let bad = |detail: String| NetError::NftOutput { detail };
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut pairs = Vec::new();
    for object in doc["nftables"].as_array().into_iter().flatten() {
        for elem in object["set"]["elem"].as_array().into_iter().flatten() {
            let concat = elem["elem"]["val"]["concat"]
                .as_array()
                .or_else(|| elem["concat"].as_array());
            let ips: Vec<Ipv4Addr> = concat
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str()?.parse().ok())
                .collect();
            if let [g, a] = ips[..] {
                pairs.push((g, a));
            }
        }
    }
    Ok(pairs)
}

/// Deletes the bridge's tables (ip and bridge family, and the DNS caps) and everything
/// in them; missing tables are not an error.
pub async fn delete_table(table: &NftTable) -> Result<(), NetError> {
    let limits = serde_json::json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": table.dns_limit_table()}}},
        {"delete": {"table": {"family": "ip", "name": table.dns_limit_table()}}}
    ]});
    helper::apply_ruleset_raw_async(&limits.to_string(), DEFAULT_NFT, std::iter::empty::<&str>())
        .await
        .map_err(wrap("delete the DNS limit table"))?;
    let bridge = format!("delete table bridge {}", table.name());
    match apply(&table.delete_bridge_table_ruleset(), &bridge).await {
        Err(NetError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {}
        other => other?,
    }
    if list_table(table).await?.is_none() {
        return Ok(());
    }
    let what = format!("delete table ip {}", table.name());
    apply(&table.delete_table_ruleset(), &what).await
}

/// `nft -j list table ip <table>`, or `None` when the table does not exist.
pub async fn list_table(table: &NftTable) -> Result<Option<String>, NetError> {
    let args = ["list", "table", "ip", table.name()];
    match helper::get_current_ruleset_raw_async(DEFAULT_NFT, args).await {
        Ok(json) => Ok(Some(json)),
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => Ok(None),
        Err(e) => Err(wrap(&format!("list table ip {}", table.name()))(e)),
    }
}

/// A rule carrying a comment, as listed by `nft -j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedRule {
    pub chain: String,
    pub handle: u32,
    pub comment: String,
}

/// What matters of a `nft -j list table` output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableListing {
    pub chains: Vec<String>,
    pub tagged_rules: Vec<TaggedRule>,
}

impl TableListing {
    pub fn parse(json: &str) -> Result<TableListing, NetError> {
        let bad = |detail: String| NetError::NftOutput { detail };
        let doc: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let objects = doc["nftables"]
            .as_array()
            .ok_or_else(|| bad("no \"nftables\" array".into()))?;
        let mut out = TableListing::default();
        for object in objects {
            if let Some(name) = object["chain"]["name"].as_str() {
                out.chains.push(name.to_string());
            }
            let rule = &object["rule"];
            if let (Some(chain), Some(handle), Some(comment)) = (
                rule["chain"].as_str(),
                rule["handle"].as_u64(),
                rule["comment"].as_str(),
            ) {
                out.tagged_rules.push(TaggedRule {
                    chain: chain.to_string(),
                    handle: u32::try_from(handle).map_err(|e| bad(e.to_string()))?,
                    comment: comment.to_string(),
                });
            }
        }
        Ok(out)
    }
}

/// Lets packets from 127.0.0.0/8 leave through `bridge` (to publish on localhost).
pub fn enable_route_localnet(bridge: &str) -> Result<(), NetError> {
    let path = Path::new("/proc/sys/net/ipv4/conf")
        .join(bridge)
        .join("route_localnet");
    fs_err::write(&path, "1\n").map_err(|source| NetError::Sysctl { path, source })
}

/// Whether the kernel forwards IPv4 (`net.ipv4.ip_forward`), for doctor.
pub fn forwarding_enabled() -> Result<bool, NetError> {
    read_flag(Path::new(IP_FORWARD))
}

/// Turns IPv4 forwarding on; returns whether it was off before.
pub fn enable_forwarding() -> Result<bool, NetError> {
    let path = Path::new(IP_FORWARD);
    if read_flag(path)? {
        return Ok(false);
    }
    fs_err::write(path, "1\n").map_err(|source| NetError::Sysctl {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!("enabled IPv4 forwarding");
    Ok(true)
}

fn read_flag(path: &Path) -> Result<bool, NetError> {
    let text = fs_err::read_to_string(path).map_err(|source| NetError::Sysctl {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_finds_chains_and_tagged_rules() {
        let json = r#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "ip", "name": "banger", "handle": 3}},
            {"chain": {"family": "ip", "table": "banger", "name": "prerouting", "handle": 3}},
            {"chain": {"family": "ip", "table": "banger", "name": "vm_abc", "handle": 9}},
            {"rule": {"family": "ip", "table": "banger", "chain": "prerouting", "handle": 11,
                      "comment": "banger vm abc", "expr": []}},
            {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 5,
                      "expr": []}}
        ]}"#;
        let listing = TableListing::parse(json).unwrap();
        assert_eq!(listing.chains, vec!["prerouting", "vm_abc"]);
        assert_eq!(
            listing.tagged_rules,
            vec![TaggedRule {
                chain: "prerouting".into(),
                handle: 11,
                comment: "banger vm abc".into()
            }]
        );
    }

    #[test]
    fn egress_pairs_are_read_with_and_without_timeouts() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"set": {"family": "ip", "name": "egress",
            "table": "banger", "type": ["ipv4_addr", "ipv4_addr"], "flags": ["timeout"],
            "elem": [{"elem": {"val": {"concat": ["172.30.0.2", "203.0.113.10"]},
                      "timeout": 600, "expires": 599}},
                     {"concat": ["172.30.0.3", "1.2.3.4"]}]}}]}"#;
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            egress_pairs(json).unwrap(),
            [
                (ip("172.30.0.2"), ip("203.0.113.10")),
                (ip("172.30.0.3"), ip("1.2.3.4"))
            ]
        );
    }

    #[test]
    fn listing_rejects_garbage() {
        assert!(TableListing::parse("{}").is_err());
        assert!(TableListing::parse("not json").is_err());
    }
}
