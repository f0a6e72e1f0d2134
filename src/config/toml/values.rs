//! The kinds of value a key may have, each read and checked by one method
//! of the walker: a number in a range, a choice of words, a table of
//! environment variables, a list of networks, a rate...
//!
//! Each takes the key it reads (for its messages) and the value, reports
//! what is wrong at the value (or the part of it that is wrong), and
//! returns `None` then. The options of [`super::options`] name these
//! methods; a new option whose value is of a kind not here adds its method
//! here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use toml::de::DeValue;

use super::{Problem, RATE_KEYS, Value, Walker};
use crate::config::{Account, IpNet, Placed, Rate, bounds};

impl Walker<'_> {
    /// An integer in `range`, which `T` holds.
    pub(super) fn within<T>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        range: RangeInclusive<u64>,
    ) -> Option<T>
    where
        T: TryFrom<u64>,
        <T as TryFrom<u64>>::Error: std::fmt::Debug,
    {
        let DeValue::Integer(integer) = value.get_ref() else {
            self.wrong_type(key, "an integer", value);
            return None;
        };
        let (min, max) = (*range.start(), *range.end());
        // TOML integers fit in an i64, so every one the TOML parser accepted
        // parses.
        let n = i128::from_str_radix(integer.as_str(), integer.radix()).unwrap_or(i128::MAX);
        match u64::try_from(n) {
            Ok(n) if range.contains(&n) => {
                Some(T::try_from(n).expect("checked: every bound fits its field's type"))
            }
            _ => {
                let problem = Problem::OutOfRange {
                    key: key.to_owned(),
                    value: n,
                    min: i128::from(min),
                    max: i128::from(max),
                };
                self.error(value.span(), problem);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, "true or false", value);
                None
            }
        }
    }

    /// Any string.
    pub(super) fn text(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        self.string(key, value).map(str::to_owned)
    }

    pub(super) fn string<'v>(&mut self, key: &str, value: &'v Value<'_>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.as_ref()),
            _ => {
                self.wrong_type(key, "a string", value);
                None
            }
        }
    }

    /// A string that is not empty.
    pub(super) fn non_empty<'v>(
        &mut self,
        key: &'static str,
        value: &'v Value<'_>,
    ) -> Option<&'v str> {
        let text = self.string(key, value)?;
        if text.is_empty() {
            self.error(value.span(), Problem::Empty(key));
            return None;
        }
        Some(text)
    }

    /// A string that must be one of `choices`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        value: &Value<'_>,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let text = self.string(key, value)?;
        let found = choices.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            let problem = Problem::NotAChoice {
                key,
                value: text.to_owned(),
                choices: choices.iter().map(|(name, _)| *name).collect(),
            };
            self.error(value.span(), problem);
        }
        found.map(|(_, choice)| *choice)
    }

    /// An absolute path.
    pub(super) fn absolute_path(
        &mut self,
        key: &'static str,
        value: &Value<'_>,
    ) -> Option<PathBuf> {
        let text = self.non_empty(key, value)?;
        if text.contains('\0') {
            self.error(value.span(), Problem::NulInPath(key));
            return None;
        }
        let path = PathBuf::from(text);
        if path.is_absolute() {
            Some(path)
        } else {
            self.error(value.span(), Problem::RelativePath(key));
            None
        }
    }

    /// A table of environment variables, sorted by name.
    pub(super) fn env(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<(String, String)>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(key, "a table of strings", value);
            return None;
        };
        let mut env = BTreeMap::new();
        let mut ok = true;
        for (variable, value) in table {
            let name = variable.get_ref().as_ref();
            if name.is_empty() || name.contains(['=', '\0']) {
                self.error(variable.span(), Problem::BadEnvName(name.to_owned()));
                ok = false;
                continue;
            }
            match self.string(&format!("{key}.{name}"), value) {
                Some(text) if text.contains('\0') => {
                    self.error(value.span(), Problem::NulInEnvValue(name.to_owned()));
                    ok = false;
                }
                Some(text) => {
                    env.insert(name.to_owned(), text.to_owned());
                }
                None => ok = false,
            }
        }
        ok.then(|| env.into_iter().collect())
    }

    /// An array of CIDR networks or addresses.
    pub(super) fn networks(&mut self, key: &'static str, value: &Value<'_>) -> Option<Vec<IpNet>> {
        let DeValue::Array(entries) = value.get_ref() else {
            self.wrong_type(key, "an array of addresses or CIDR networks", value);
            return None;
        };
        let nets: Vec<IpNet> = entries
            .iter()
            .filter_map(|entry| {
                let text = self.string(key, entry)?;
                let net = network(text);
                if net.is_none() {
                    let value = text.to_owned();
                    self.error(entry.span(), Problem::BadNetwork { key, value });
                }
                net
            })
            .collect();
        (nets.len() == entries.len()).then_some(nets)
    }

    /// A table `{ per_second = NUMBER, burst = INTEGER }`.
    pub(super) fn rate(&mut self, key: &'static str, value: &Value<'_>) -> Option<Rate> {
        let DeValue::Table(table) = value.get_ref() else {
            let expected = "a table { per_second = NUMBER, burst = INTEGER }";
            self.wrong_type(key, expected, value);
            return None;
        };
        let name = format!("`{key}`");
        // `None`: absent; `Some(None)`: present but wrong.
        let (mut per_second, mut burst) = (None, None);
        let mut unknown = false;
        for (field, value) in table {
            match field.get_ref().as_ref() {
                "per_second" => {
                    per_second = Some(self.per_second(&format!("{key}.per_second"), value));
                }
                "burst" => burst = Some(self.within(&format!("{key}.burst"), value, bounds::BURST)),
                _ => {
                    self.unknown_key(field, &name, RATE_KEYS.to_vec());
                    unknown = true;
                }
            }
        }
        for (field, present) in [
            ("per_second", per_second.is_some()),
            ("burst", burst.is_some()),
        ] {
            if !present {
                let problem = Problem::Missing {
                    key: field,
                    table: name.clone(),
                };
                self.error(value.span(), problem);
            }
        }
        match (per_second, burst, unknown) {
            (Some(Some(per_second)), Some(Some(burst)), false) => Some(Rate { per_second, burst }),
            _ => None,
        }
    }

    /// A float of at least [`bounds::MIN_PER_SECOND`]; an integer is accepted.
    fn per_second(&mut self, key: &str, value: &Value<'_>) -> Option<f64> {
        let number = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            _ => {
                self.wrong_type(key, "a number", value);
                return None;
            }
        };
        match number {
            Some(n) if n.is_finite() && n >= bounds::MIN_PER_SECOND => Some(n),
            _ => {
                let key = key.to_owned();
                self.error(value.span(), Problem::RateTooLow { key });
                None
            }
        }
    }
}

impl Walker<'_> {
    /// Permission bits as an octal string: `"0660"`, `"660"`.
    pub(super) fn octal_mode(&mut self, key: &'static str, value: &Value<'_>) -> Option<u32> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.as_ref(),
            _ => {
                self.wrong_type(key, "an octal string such as \"0660\"", value);
                return None;
            }
        };
        let mode = (!text.is_empty() && text.len() <= 4)
            .then(|| u32::from_str_radix(text, 8).ok())
            .flatten()
            .filter(|mode| bounds::SOCKET_MODE.contains(&u64::from(*mode)));
        if mode.is_none() {
            let problem = Problem::BadMode {
                key,
                value: text.to_owned(),
            };
            self.error(value.span(), problem);
        }
        mode
    }

    /// A user or group: its name, or its ID as an integer.
    pub(super) fn account(&mut self, key: &'static str, value: &Value<'_>) -> Option<Account> {
        match value.get_ref() {
            DeValue::Integer(_) => self
                .within::<u32>(key, value, bounds::ACCOUNT_ID)
                .map(Account::Id),
            DeValue::String(_) => {
                let name = self.non_empty(key, value)?;
                if name.chars().any(|c| c.is_control() || c == ':') {
                    let problem = Problem::BadAccount {
                        key,
                        value: name.to_owned(),
                    };
                    self.error(value.span(), problem);
                    return None;
                }
                Some(Account::Name(Placed::new(
                    name.to_owned(),
                    self.pos(&value.span()),
                )))
            }
            _ => {
                self.wrong_type(key, "a name or a numeric ID", value);
                None
            }
        }
    }

    /// An array of users or groups, each a name or an ID.
    pub(super) fn accounts(
        &mut self,
        key: &'static str,
        value: &Value<'_>,
    ) -> Option<Vec<Account>> {
        let DeValue::Array(entries) = value.get_ref() else {
            self.wrong_type(key, "an array of names or numeric IDs", value);
            return None;
        };
        let accounts: Vec<Account> = entries
            .iter()
            .filter_map(|entry| self.account(key, entry))
            .collect();
        (accounts.len() == entries.len()).then_some(accounts)
    }
}

/// The keys of a `tls` table.
pub(super) const TLS_KEYS: &[&str] = &["cert", "key", "client_ca", "min_version", "alpn"];

impl Walker<'_> {
    /// `tls = { cert = PATH, key = PATH, client_ca = PATH, min_version =
    /// "1.2" | "1.3", alpn = [...] }`, kept with where it was written (the
    /// files are read when the config is resolved).
    pub(super) fn tls(
        &mut self,
        key: &'static str,
        value: &Value<'_>,
    ) -> Option<Placed<crate::tls::Files>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(key, "a table { cert = PATH, key = PATH, ... }", value);
            return None;
        };
        let (mut cert, mut private, mut client_ca) = (None, None, None);
        let mut min_version = Some(crate::tls::MinVersion::default());
        let mut alpn = Some(Vec::new());
        let mut ok = true;
        for (field, value) in table {
            match field.get_ref().as_ref() {
                "cert" => cert = Some(self.absolute_path("tls.cert", value)),
                "key" => private = Some(self.absolute_path("tls.key", value)),
                "client_ca" => client_ca = Some(self.absolute_path("tls.client_ca", value)),
                "min_version" => {
                    min_version = self.choice(
                        "tls.min_version",
                        value,
                        &[
                            ("1.2", crate::tls::MinVersion::Tls12),
                            ("1.3", crate::tls::MinVersion::Tls13),
                        ],
                    );
                }
                "alpn" => alpn = self.alpn(value),
                _ => {
                    self.unknown_key(field, "`tls`", TLS_KEYS.to_vec());
                    ok = false;
                }
            }
        }
        for (field, present) in [("cert", cert.is_some()), ("key", private.is_some())] {
            if !present {
                let table = "`tls`".to_owned();
                self.error(value.span(), Problem::Missing { key: field, table });
                ok = false;
            }
        }
        let files = crate::tls::Files {
            cert: cert??,
            key: private??,
            client_ca: match client_ca {
                Some(path) => Some(path?),
                None => None,
            },
            min_version: min_version?,
            alpn: alpn?,
        };
        ok.then(|| Placed::new(files, self.pos(&value.span())))
    }

    /// `alpn`: protocol names, each 1-255 bytes.
    fn alpn(&mut self, value: &Value<'_>) -> Option<Vec<String>> {
        let DeValue::Array(entries) = value.get_ref() else {
            self.wrong_type("tls.alpn", "an array of protocol names", value);
            return None;
        };
        let names: Vec<String> = entries
            .iter()
            .filter_map(|entry| {
                let name = self.non_empty("tls.alpn", entry)?;
                if name.len() > 255 {
                    self.error(entry.span(), Problem::LongAlpn);
                    return None;
                }
                Some(name.to_owned())
            })
            .collect();
        (names.len() == entries.len()).then_some(names)
    }
}

/// A CIDR network, or an address as the network of that one host.
fn network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
