//! The `__OW_*` variables the loop sets for the handler, each rewritten in place only when its
//! value changed.

use crate::runline::Fields;

/// One `__OW_*` variable the loop sets. Its `NAME=value` string is a buffer of the loop's own,
/// put into the environment once with putenv(3) and rewritten in place when the value changes:
/// no allocation, no lock, no search per activation — and no leak: glibc's setenv(3) keeps a
/// copy of every distinct value it was ever given (~96 bytes each, measured), and the
/// activation id and deadline are new on every activation.
pub(super) struct OwVar {
    /// The run line's key, e.g. `activation_id`.
    key: String,
    /// `NAME=` (e.g. `__OW_ACTIVATION_ID=`), then the value and a NUL: the environment's string.
    /// Never freed (the environment may point at it until the process ends); replaced by a
    /// larger one, at least twice the size, when a value outgrows it.
    buf: &'static [std::cell::Cell<u8>],
    /// Length of `NAME=`.
    prefix: usize,
    /// The variable's name.
    name: String,
    /// The name and a NUL, for getenv.
    name_c: Vec<u8>,
    /// The value in `buf`.
    value: String,
    /// Whether the environment points at `buf` (false once the handler set or removed the
    /// variable itself).
    current: bool,
}

impl OwVar {
    pub(super) fn new(key: &str) -> Self {
        let name = format!("__OW_{}", key.to_uppercase());
        let prefix = format!("{name}=");
        let mut name_c = name.clone().into_bytes();
        name_c.push(0);
        let mut var = Self {
            key: key.to_string(),
            buf: &[],
            prefix: prefix.len(),
            name,
            name_c,
            value: String::new(),
            current: false,
        };
        var.grow(prefix.as_bytes(), 0);
        var
    }

    /// A new buffer with room for a value of `len` bytes (the old one stays alive: the
    /// environment may still point at it).
    fn grow(&mut self, prefix: &[u8], len: usize) {
        let size = (prefix.len() + len + 1).next_power_of_two().max(64);
        let buf: &'static [std::cell::Cell<u8>] =
            Box::leak((0..size).map(|_| std::cell::Cell::new(0)).collect());
        for (dst, b) in buf.iter().zip(prefix) {
            dst.set(*b);
        }
        self.buf = buf;
        self.current = false;
    }

    /// Sets the variable to `text` (no NUL in it).
    #[allow(unsafe_code)]
    pub(super) fn set(&mut self, text: &str) {
        if self.prefix + text.len() + 1 > self.buf.len() {
            let prefix: Vec<u8> = self.buf[..self.prefix].iter().map(|c| c.get()).collect();
            self.grow(&prefix, text.len());
        }
        let value = &self.buf[self.prefix..];
        for (dst, b) in value.iter().zip(text.bytes()) {
            dst.set(b);
        }
        value[text.len()].set(0);
        self.value.clear();
        self.value.push_str(text);
        if !self.current {
            let name = &self.name;
            if std::env::var_os(name).is_none() {
                // A new name grows the environment's array: done by std under its lock, so
                // putenv below only swaps the pointer in an existing slot.
                // SAFETY: as in `set_var_if_changed`.
                unsafe { std::env::set_var(name, text) };
            }
            // SAFETY: `buf` is a NUL-terminated `NAME=value` string that lives until the
            // process ends (leaked), as putenv requires; the environment is changed on the
            // loop's thread between activations, under the contract of `set_var_if_changed`.
            // Rewriting `buf` later changes the variable in place, under the same contract.
            unsafe { libc::putenv(self.buf.as_ptr().cast::<libc::c_char>().cast_mut()) };
            self.current = true;
        }
    }

    /// Whether the environment still points at `buf` (the handler may have replaced it).
    #[allow(unsafe_code)]
    fn still_current(&self) -> bool {
        // SAFETY: `name_c` is NUL-terminated; getenv only reads the environment, on the loop's
        // thread, under the contract of `set_var_if_changed`.
        let found = unsafe { libc::getenv(self.name_c.as_ptr().cast::<libc::c_char>()) };
        std::ptr::eq(
            found.cast::<u8>().cast_const(),
            self.buf[self.prefix..].as_ptr().cast::<u8>(),
        )
    }
}

/// More distinct run-line keys than this are not remembered (the proxy sends about eight).
const MAX_OW_VARS: usize = 64;

/// Sets `__OW_<KEY>` for every key but `value`, as the official Rust launcher does. A variable
/// that still holds the value the loop set last is left alone: most repeat between activations
/// (namespace, action name and version, API key), and reading the environment or setting it
/// costs more (`setenv` allocates, takes the lock and keeps every value it was ever given).
pub(super) fn set_ow_env(fields: &Fields<'_>, vars: &mut Vec<OwVar>) {
    for (key, field) in fields {
        let text = field.text();
        let known = vars.iter().position(|v| v.key == *key);
        if let Some(v) = known.map(|i| &vars[i]) {
            if v.current && v.value == *text {
                continue;
            }
        }
        // set_var panics on these; such a key cannot be a variable name anyway.
        if key.is_empty() || key.contains(['=', '\0']) || text.contains('\0') {
            continue;
        }
        match known {
            Some(i) => vars[i].set(&text),
            None if vars.len() < MAX_OW_VARS => {
                let mut var = OwVar::new(key);
                var.set(&text);
                vars.push(var);
            }
            None => set_var_if_changed(&format!("__OW_{}", key.to_uppercase()), &text),
        }
    }
}

#[allow(unsafe_code)]
fn set_var_if_changed(name: &str, text: &str) {
    if std::env::var_os(name).is_some_and(|current| current == text) {
        return;
    }
    // SAFETY: called on the loop's thread between activations, before the handler runs; the
    // SDK itself starts no threads, so nothing of ours reads the environment concurrently.
    // Threads the action starts itself must not read the environment while the loop runs
    // (documented in the crate docs); the official launcher has the same contract.
    unsafe { std::env::set_var(name, text) };
}

/// Marks the `__OW_*` variables the handler changed (or removed), so the next activation sets
/// them again. Runs after the result line is written.
pub(super) fn note_changed_ow_env(vars: &mut [OwVar]) {
    for v in vars.iter_mut().filter(|v| v.current) {
        v.current = v.still_current();
    }
}
