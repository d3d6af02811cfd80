//! The host's upstream resolvers, from resolv.conf.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::NetError;

/// The host's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` entries of a resolv.conf, on port 53, in file order. Entries in
/// `skip` (banger's own DNS listeners) are left out so the server never forwards to
/// itself; IPv6 link-local entries with a `%zone` are left out too.
pub fn parse_nameservers(text: &str, skip: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !skip.contains(&addr) && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Reads `path` (normally [`RESOLV_CONF`]) and returns its upstream resolvers.
pub fn host_nameservers(path: &Path, skip: &[SocketAddr]) -> Result<Vec<SocketAddr>, NetError> {
    let text = fs_err::read_to_string(path).map_err(|source| NetError::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_nameservers(&text, skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_in_order() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.2.3\nnameserver  1.1.1.1 \noptions edns0\n";
        let got = parse_nameservers(text, &[]);
        assert_eq!(
            got,
            vec![
                "10.0.2.3:53".parse::<SocketAddr>().unwrap(),
                "1.1.1.1:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn keeps_ipv6_and_drops_zoned_and_garbage() {
        let text =
            "nameserver 2001:db8::1\nnameserver fe80::1%eth0\nnameserver bogus\nnameserver\n";
        let got = parse_nameservers(text, &[]);
        assert_eq!(got, vec!["[2001:db8::1]:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn skips_itself_and_duplicates() {
        let text = "nameserver 172.30.0.1\nnameserver 127.0.0.53\nnameserver 127.0.0.53\n";
        let own: SocketAddr = "172.30.0.1:53".parse().unwrap();
        let got = parse_nameservers(text, &[own]);
        assert_eq!(got, vec!["127.0.0.53:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn listener_on_another_port_is_not_itself() {
        let text = "nameserver 127.0.0.1\n";
        let own: SocketAddr = "127.0.0.1:42069".parse().unwrap();
        let got = parse_nameservers(text, &[own]);
        assert_eq!(got, vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = host_nameservers(Path::new("/nonexistent/resolv.conf"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read resolver configuration /nonexistent/resolv.conf"
        );
    }
}
