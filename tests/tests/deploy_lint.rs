//! The deployment files (docker/, k8s/) pass hadolint and the Kubernetes / KEDA schemas, and
//! the checker does reject a broken manifest (so a pass means something).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lint(k8s: &Path) -> std::process::Output {
    Command::new("bash").arg(root().join("scripts/lint-deploy.sh")).arg(k8s).output().unwrap()
}

#[test]
fn dockerfiles_and_manifests_pass_their_linters() {
    let out = lint(&root().join("k8s"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 KEDA files"), "{said}");
}

#[test]
fn a_broken_manifest_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("k8s")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let f = dir.path().join("gpu-pool.yaml");
    let text = std::fs::read_to_string(&f).unwrap().replace("terminationGracePeriodSeconds", "terminationGracePeriodSecs");
    std::fs::write(&f, text).unwrap();
    let out = lint(dir.path());
    assert!(!out.status.success(), "an unknown field passed validation");
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminationGracePeriodSecs"));
}
