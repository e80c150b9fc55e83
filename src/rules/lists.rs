//! Compiled lookup tables for list matchers, and list files.
//!
//! Lists may hold thousands of entries, so each is compiled once at load
//! into a structure whose lookup cost does not grow with its size: CIDRs
//! into one hash set per prefix length (a lookup masks the address once per
//! distinct length), domains and names into hash sets (a domain lookup
//! tries the name and each parent). List files hold one entry a line;
//! blank lines and `#` comments are skipped.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Networks, IPv4 and IPv6, looked up by address.
#[derive(Debug, Default, Clone)]
pub(crate) struct CidrTable {
    /// IPv4 networks: (prefix length, masked network addresses).
    v4: Vec<(u8, HashSet<u32>)>,
    /// IPv6 networks: (prefix length, masked network addresses).
    v6: Vec<(u8, HashSet<u128>)>,
    /// Number of entries, for summaries.
    len: usize,
}

/// The mask for the top `len` bits of a 32-bit address.
fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The mask for the top `len` bits of a 128-bit address.
fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl CidrTable {
    /// Adds `entry`: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    /// Host bits set below the prefix are an error (`10.0.0.1/8` is most
    /// likely a typo for something else).
    pub(crate) fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        let (addr, len) = match entry.split_once('/') {
            Some((a, l)) => {
                let ip: IpAddr = a
                    .parse()
                    .map_err(|_| format!("{entry:?} is not a CIDR network: bad address"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = l.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
                    format!("{entry:?} is not a CIDR network: prefix length must be 0 to {max}")
                })?;
                (ip, len)
            }
            None => {
                let ip: IpAddr = entry.parse().map_err(|_| {
                    format!("{entry:?} is not an IP address or CIDR network (e.g. 192.0.2.0/24)")
                })?;
                let len = if ip.is_ipv4() { 32 } else { 128 };
                (ip, len)
            }
        };
        match normalize(addr) {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                if bits & !mask4(len) != 0 {
                    return Err(format!(
                        "{entry:?} has host bits set; the network is {}/{len}",
                        std::net::Ipv4Addr::from(bits & mask4(len))
                    ));
                }
                insert(&mut self.v4, len, bits);
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                if bits & !mask6(len) != 0 {
                    return Err(format!(
                        "{entry:?} has host bits set; the network is {}/{len}",
                        std::net::Ipv6Addr::from(bits & mask6(len))
                    ));
                }
                insert(&mut self.v6, len, bits);
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Whether `ip` is in one of the networks. IPv4-mapped IPv6 addresses
    /// (`::ffff:192.0.2.1`, what a dual-stack listener reports) are looked
    /// up as IPv4.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match normalize(ip) {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4
                    .iter()
                    .any(|(len, set)| set.contains(&(bits & mask4(*len))))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6
                    .iter()
                    .any(|(len, set)| set.contains(&(bits & mask6(*len))))
            }
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Adds a masked network to the set for its prefix length, keeping the
/// lengths sorted longest first (most specific first).
fn insert<T: std::hash::Hash + Eq>(sets: &mut Vec<(u8, HashSet<T>)>, len: u8, bits: T) {
    match sets.iter_mut().find(|(l, _)| *l == len) {
        Some((_, set)) => {
            set.insert(bits);
        }
        None => {
            sets.push((len, HashSet::from([bits])));
            sets.sort_by_key(|s| std::cmp::Reverse(s.0));
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
pub(crate) fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Domains: `example.com` matches exactly that name, `.example.com` any
/// name below it (not `example.com` itself), as in Postfix tables.
/// Case-insensitive; a trailing dot is ignored.
#[derive(Debug, Default, Clone)]
pub(crate) struct DomainSet {
    /// Exact names, lowercase.
    exact: HashSet<String>,
    /// Parent suffixes with their leading dot, lowercase.
    below: HashSet<String>,
}

impl DomainSet {
    /// Adds one entry.
    pub(crate) fn add(&mut self, entry: &str) -> Result<(), String> {
        let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = e.strip_prefix('.').unwrap_or(&e);
        if name.is_empty()
            || name.contains('@')
            || name.split('.').any(|l| l.is_empty())
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{entry:?} is not a domain (e.g. example.com, or .example.com for its subdomains)"
            ));
        }
        if e.starts_with('.') {
            self.below.insert(e);
        } else {
            self.exact.insert(e);
        }
        Ok(())
    }

    /// Whether `domain` (already lowercase, no trailing dot) is listed.
    pub(crate) fn contains(&self, domain: &str) -> bool {
        if self.exact.contains(domain) {
            return true;
        }
        if self.below.is_empty() {
            return false;
        }
        domain
            .char_indices()
            .filter(|(_, c)| *c == '.')
            .any(|(i, _)| self.below.contains(&domain[i..]))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.below.len()
    }

    /// True when there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one entry of a list came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The entry text, trimmed.
    pub text: String,
    /// The list file and 1-based line, or `None` for an inline entry.
    pub origin: Option<(Arc<PathBuf>, usize)>,
}

/// Reads list files, each once per load however many rules name it.
#[derive(Default)]
pub(crate) struct ListFiles {
    /// Entries of files already read, by resolved path.
    cache: HashMap<PathBuf, Arc<Vec<Entry>>>,
}

impl ListFiles {
    /// The entries of the list file `name`, resolved against `base` (the
    /// directory of the rule file naming it) when relative.
    pub(crate) fn read(&mut self, base: &Path, name: &str) -> Result<Arc<Vec<Entry>>, String> {
        let path = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            base.join(name)
        };
        if let Some(entries) = self.cache.get(&path) {
            return Ok(entries.clone());
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read list file {}: {e}", path.display()))?;
        let shared = Arc::new(path.clone());
        let entries: Vec<Entry> = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let line = strip_comment(line).trim();
                (!line.is_empty()).then(|| Entry {
                    text: line.to_string(),
                    origin: Some((shared.clone(), i + 1)),
                })
            })
            .collect();
        let entries = Arc::new(entries);
        self.cache.insert(path, entries.clone());
        Ok(entries)
    }
}

/// A list line without its `#` comment. A `#` inside a regex is kept when
/// it is not preceded by whitespace (`a#b`), so only ` # comment` and lines
/// starting with `#` are comments.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table_matches_v4_v6_and_mapped() {
        let mut t = CidrTable::default();
        for e in ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "0.0.0.0/0"] {
            if e == "0.0.0.0/0" {
                continue;
            }
            t.add(e).unwrap();
        }
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!t.contains("2001:db9::5".parse().unwrap()));
        assert!(t.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(t.len(), 3);
        let mut all = CidrTable::default();
        all.add("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn cidr_errors_say_why() {
        let mut t = CidrTable::default();
        assert!(t.add("10.0.0/8").unwrap_err().contains("bad address"));
        assert!(t.add("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(t.add("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(t.add("example.com").unwrap_err().contains("not an IP"));
    }

    #[test]
    fn domain_set_exact_and_below() {
        let mut d = DomainSet::default();
        d.add("Example.COM.").unwrap();
        d.add(".spam.test").unwrap();
        assert!(d.contains("example.com"));
        assert!(!d.contains("sub.example.com"));
        assert!(d.contains("a.b.spam.test"));
        assert!(!d.contains("spam.test"));
        assert!(!d.contains("notspam.test"));
        assert!(d.add("a@b.c").is_err());
        assert!(d.add("a..b").is_err());
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn list_files_skip_comments_and_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("l.txt"),
            "# header\n\n10.0.0.0/8   # office\n  192.0.2.1\nfoo#bar\n",
        )
        .unwrap();
        let mut files = ListFiles::default();
        let a = files.read(dir.path(), "l.txt").unwrap();
        let texts: Vec<_> = a.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["10.0.0.0/8", "192.0.2.1", "foo#bar"]);
        assert_eq!(a[1].origin.as_ref().unwrap().1, 4);
        std::fs::remove_file(dir.path().join("l.txt")).unwrap();
        assert_eq!(files.read(dir.path(), "l.txt").unwrap().len(), 3);
        assert!(files
            .read(dir.path(), "missing.txt")
            .unwrap_err()
            .contains("cannot read list file"));
    }
}
