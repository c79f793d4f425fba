//! Builds the example actions as static release executables and packages each as an OpenWhisk
//! zip holding a single top-level `exec` (mode 0755), ready for
//! `wsk action create hello dist/hello.zip --kind rust:1.34`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The example actions (binaries of `whisk-actions`).
pub const EXAMPLE_ACTIONS: [&str; 3] = ["hello", "orders", "flaky"];

/// The static target used by default.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// What to build and where to put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOptions {
    /// Workspace root (where `cargo` runs). Defaults to the current directory.
    pub workspace: PathBuf,
    /// Rust target triple. Defaults to [`MUSL_TARGET`].
    pub target: String,
    /// Output directory. Defaults to `dist`.
    pub out_dir: PathBuf,
}

impl Default for PackageOptions {
    fn default() -> Self {
        Self {
            workspace: PathBuf::from("."),
            target: MUSL_TARGET.into(),
            out_dir: PathBuf::from("dist"),
        }
    }
}

/// Runs `cargo build --release --target <target> -p whisk-actions`, then zips each example action
/// into `<out_dir>/<action>.zip`. Returns the zips written.
pub fn build_and_package(opts: &PackageOptions) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&opts.workspace)
        .args([
            "build",
            "--release",
            "--target",
            &opts.target,
            "-p",
            "whisk-actions",
        ])
        .status()
        .map_err(|source| Error::Io {
            what: "running cargo build".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Package(format!(
            "cargo build --release --target {} -p whisk-actions failed ({status}); \
             is the target installed? rustup target add {}",
            opts.target, opts.target
        )));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| opts.workspace.join("target"));
    let bin_dir = target_dir.join(&opts.target).join("release");
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::Io {
        what: format!("creating {}", opts.out_dir.display()),
        source,
    })?;
    EXAMPLE_ACTIONS
        .iter()
        .map(|a| {
            let out = opts.out_dir.join(format!("{a}.zip"));
            zip_exec(&bin_dir.join(a), &out)?;
            Ok(out)
        })
        .collect()
}

/// Writes a zip at `out` whose only entry is `exec` (mode 0755) with the bytes of `executable`.
pub fn zip_exec(executable: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(executable).map_err(|source| Error::Io {
        what: format!("reading {}", executable.display()),
        source,
    })?;
    let file = std::fs::File::create(out).map_err(|source| Error::Io {
        what: format!("creating {}", out.display()),
        source,
    })?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o755)
        .large_file(bytes.len() > u32::MAX as usize);
    let fail =
        |e: &dyn std::fmt::Display| Error::Package(format!("writing {}: {e}", out.display()));
    zip.start_file("exec", options).map_err(|e| fail(&e))?;
    zip.write_all(&bytes).map_err(|e| fail(&e))?;
    zip.finish().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_holds_a_single_executable_exec_at_top_level() {
        let dir = std::env::temp_dir().join(format!("whisk-emu-zip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("hello");
        std::fs::write(&exe, b"\x7fELF fake").unwrap();
        let out = dir.join("hello.zip");
        zip_exec(&exe, &out).unwrap();
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(archive.len(), 1);
        let mut f = archive.by_index(0).unwrap();
        assert_eq!(f.name(), "exec");
        assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut content).unwrap();
        assert_eq!(content, b"\x7fELF fake");
        drop(f);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_executable_is_an_error_naming_it() {
        let err = zip_exec(Path::new("/nonexistent/hello"), Path::new("/tmp/x.zip")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/hello"));
    }
}
