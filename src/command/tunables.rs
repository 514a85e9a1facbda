//! Redis's encoding thresholds (hash-max-listpack-entries and friends):
//! CONFIG SET accepts them and CONFIG GET reports them, as applications
//! and Redis's own tests set them. The hash ones bound the packed form of
//! hashes and sets (`store::value::elements`), for the whole process (the
//! nodes of an in-process test cluster share them); the others change
//! nothing yet.

use parking_lot::Mutex;

/// The thresholds of Redis 7.0, with the defaults of its redis.conf (which
/// Debian's service loads; redis-server started without a config file
/// has hash-max-listpack-entries 512); the `ziplist` names are its
/// aliases of the `listpack` ones.
const DEFAULTS: &[(&str, i64)] = &[
    ("hash-max-listpack-entries", 128),
    ("hash-max-listpack-value", 64),
    ("hash-max-ziplist-entries", 128),
    ("hash-max-ziplist-value", 64),
    ("set-max-intset-entries", 512),
    ("zset-max-listpack-entries", 128),
    ("zset-max-listpack-value", 64),
    ("zset-max-ziplist-entries", 128),
    ("zset-max-ziplist-value", 64),
    ("list-max-listpack-size", -2),
    ("list-max-ziplist-size", -2),
    ("list-compress-depth", 0),
    ("stream-node-max-bytes", 4096),
    ("stream-node-max-entries", 100),
];

/// The current values, one per name of [`DEFAULTS`].
#[derive(Debug)]
pub struct Tunables(Mutex<Vec<(&'static str, i64)>>);

impl Default for Tunables {
    fn default() -> Self {
        Self(Mutex::new(DEFAULTS.to_vec()))
    }
}

impl Tunables {
    /// The canonical name if `name` is one of them.
    pub fn lookup(name: &[u8]) -> Option<&'static str> {
        DEFAULTS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Sets one (and its alias): `name` must come from [`Tunables::lookup`].
    pub fn set(&self, name: &str, value: i64) {
        let alias = |n: &str| n.replace("ziplist", "listpack");
        let mut values = self.0.lock();
        for (n, v) in values.iter_mut() {
            if *n == name || alias(n) == alias(name) {
                *v = value;
            }
        }
        let limit = usize::try_from(value).ok();
        match alias(name).as_str() {
            "hash-max-listpack-entries" => crate::store::value::set_packed_limits(limit, None),
            "hash-max-listpack-value" => crate::store::value::set_packed_limits(None, limit),
            _ => {}
        }
    }

    pub fn all(&self) -> Vec<(&'static str, i64)> {
        self.0.lock().clone()
    }
}
