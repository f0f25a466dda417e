//! What tests/tests/deploy_lint.rs reads the deployment files with: the rendered overlays as
//! JSON, the environment and files one container gets (as the kubelet would give them), a
//! `kiln config check` run with exactly those, and a small evaluator of the CloudFormation
//! intrinsics the SAM template uses.

use kiln_tests::{kiln_bin, workspace_root};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pod IP the tests give `status.podIP`.
pub const POD_IP: &str = "10.1.2.3";

pub fn python() -> PathBuf {
    workspace_root().join(".tools/venv/bin/python")
}

/// `.tools/bin/kubectl` (scripts/fetch-tools.sh), else the one on PATH.
pub fn kubectl() -> PathBuf {
    let own = workspace_root().join(".tools/bin/kubectl");
    if own.exists() {
        own
    } else {
        PathBuf::from("kubectl")
    }
}

/// Multi-document YAML (CloudFormation tags included) as JSON values, by scripts/yaml2json.py.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(workspace_root().join("scripts/yaml2json.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tools venv's python (scripts/fetch-tools.sh)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "yaml2json: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("yaml2json gave {other}"),
    }
}

/// `kubectl kustomize DIR`, as JSON documents.
pub fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl()).arg("kustomize").arg(dir).output().expect("kubectl (scripts/fetch-tools.sh)");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// A workload (StatefulSet or Deployment) of kiln and its `kiln` container.
pub struct Kiln<'a> {
    pub workload: &'a Value,
    pub container: &'a Value,
}

impl Kiln<'_> {
    pub fn name(&self) -> &str {
        name(self.workload)
    }
    pub fn spec(&self) -> &Value {
        &self.workload["spec"]["template"]["spec"]
    }
    /// The name its first pod gets: stable `NAME-0` for a StatefulSet.
    pub fn pod_name(&self) -> String {
        match self.workload["kind"].as_str() {
            Some("StatefulSet") => format!("{}-0", self.name()),
            _ => format!("{}-6d9f7c-x2x4q", self.name()),
        }
    }
    pub fn gpus(&self) -> u64 {
        let r = &self.container["resources"]["requests"]["nvidia.com/gpu"];
        r.as_str().and_then(|s| s.parse().ok()).or(r.as_u64()).unwrap_or(0)
    }
}

pub fn kiln_workloads(docs: &[Value]) -> Vec<Kiln<'_>> {
    docs.iter()
        .filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
        .filter(|d| d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "kiln")
        .filter_map(|d| {
            let c = d["spec"]["template"]["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == "kiln")?;
            Some(Kiln { workload: d, container: c })
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes().filter(|b| *b != b'=' && !b.is_ascii_whitespace()) {
        let v = ABC.iter().position(|c| *c == b).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A ConfigMap's `data` or a Secret's decoded `data`/`stringData`; None when the object is
/// not in the rendering (an operator creates it).
pub fn object_data(docs: &[Value], kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let d = find(docs, kind, name)?;
    let mut m = BTreeMap::new();
    for (k, v) in d["data"].as_object().into_iter().flatten() {
        let v = v.as_str().unwrap_or_default();
        let v = if kind == "Secret" { String::from_utf8_lossy(&base64_decode(v)).into_owned() } else { v.to_owned() };
        m.insert(k.clone(), v);
    }
    for (k, v) in d["stringData"].as_object().into_iter().flatten() {
        m.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
    }
    Some(m)
}

/// `$(VAR)` references to earlier variables, as the kubelet expands them.
fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The environment the container gets: envFrom first, then env (later wins), with `$(VAR)`
/// expanded and the downward API answered (`metadata.name` is [`Kiln::pod_name`]).
pub fn container_env(docs: &[Value], k: &Kiln) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    fn set(vars: &mut Vec<(String, String)>, key: String, value: String) {
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    }
    for from in k.container["envFrom"].as_array().into_iter().flatten() {
        let (kind, r) = match (&from["configMapRef"], &from["secretRef"]) {
            (r, _) if r.is_object() => ("ConfigMap", r),
            (_, r) => ("Secret", r),
        };
        let n = r["name"].as_str().unwrap_or_default();
        match object_data(docs, kind, n) {
            Some(data) => data.into_iter().for_each(|(key, v)| set(&mut vars, key, v)),
            None if r["optional"] == true => {}
            None => return Err(format!("envFrom {kind} {n} is neither rendered nor optional")),
        }
    }
    for e in k.container["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &vars)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => k.pod_name(),
                "status.podIP" => POD_IP.to_owned(),
                other => return Err(format!("{key}: fieldRef {other} not modelled by the test")),
            }
        } else {
            let (kind, r) = match (&e["valueFrom"]["configMapKeyRef"], &e["valueFrom"]["secretKeyRef"]) {
                (r, _) if r.is_object() => ("ConfigMap", r),
                (_, r) => ("Secret", r),
            };
            let n = r["name"].as_str().unwrap_or_default();
            let item = r["key"].as_str().unwrap_or_default();
            object_data(docs, kind, n)
                .and_then(|d| d.get(item).cloned())
                .ok_or_else(|| format!("{key}: {kind} {n} key {item} not rendered"))?
        };
        set(&mut vars, key, value);
    }
    Ok(vars)
}

/// Runs `kiln config check` with the container's environment and its ConfigMap and Secret
/// volumes written under a temporary root (paths in the environment moved there). A Secret
/// an operator creates (not rendered) holds a placeholder `tenant:token` line per file the
/// environment names in it. Returns the summary it prints, or its error.
pub fn config_check(docs: &[Value], k: &Kiln) -> Result<Value, String> {
    let vars = container_env(docs, k)?;
    run_config_check(docs, k.spec(), k.container, vars)
}

pub fn run_config_check(docs: &[Value], spec: &Value, container: &Value, mut vars: Vec<(String, String)>) -> Result<Value, String> {
    let root = tempfile::tempdir().unwrap();
    let volumes: Map<String, Value> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or_default().to_owned(), v.clone()))
        .collect();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let Some(vol) = volumes.get(m["name"].as_str().unwrap_or_default()) else {
            return Err(format!("volumeMount {} has no volume", m["name"]));
        };
        let mount = m["mountPath"].as_str().unwrap_or_default().to_owned();
        let dir = root.path().join(mount.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let data = if let Some(n) = vol["configMap"]["name"].as_str() {
            Some(object_data(docs, "ConfigMap", n).ok_or_else(|| format!("ConfigMap {n} is not rendered"))?)
        } else if let Some(n) = vol["secret"]["secretName"].as_str() {
            object_data(docs, "Secret", n)
        } else {
            // Scratch (emptyDir): nothing to provide, no paths to move.
            continue;
        };
        match data {
            Some(data) => {
                for (key, v) in data {
                    std::fs::write(dir.join(key), v).unwrap();
                }
            }
            None => {
                for (_, v) in &vars {
                    if let Some(rest) = v.strip_prefix(&format!("{mount}/")) {
                        std::fs::write(dir.join(rest), "ops:operator-created-token\n").unwrap();
                    }
                }
            }
        }
        mounts.push((mount, dir));
    }
    for (_, v) in vars.iter_mut() {
        if let Some(moved) = mounts.iter().find_map(|(mount, dir)| v.strip_prefix(&format!("{mount}/")).map(|rest| dir.join(rest))) {
            *v = moved.to_string_lossy().into_owned();
        }
    }
    let out = Command::new(kiln_bin())
        .args(["config", "check"])
        .env_clear()
        .envs(vars)
        .current_dir(root.path())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).map_err(|e| format!("summary {stdout:?}: {e}"))
}

/// A Kubernetes quantity of CPU in millicores ("4", "500m").
pub fn millicores(q: &Value) -> Option<u64> {
    let s = q.as_str().map(str::to_owned).or_else(|| q.as_u64().map(|n| n.to_string()))?;
    match s.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => s.parse::<f64>().ok().map(|c| (c * 1000.0).round() as u64),
    }
}

/// CloudFormation intrinsics (Ref, Fn::Sub, Fn::Join, Fn::Split, Fn::If, Fn::Not,
/// Fn::Equals) over given parameters; `AWS::NoValue` drops the value.
pub struct Cfn<'a> {
    pub params: BTreeMap<String, Value>,
    pub conditions: &'a Value,
}

impl Cfn<'_> {
    pub fn eval(&self, v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(items.iter().map(|i| self.eval(i)).filter(|i| !i.is_null()).collect()),
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().unwrap();
                match k.as_str() {
                    "Ref" => self.params.get(arg.as_str().unwrap_or_default()).cloned().unwrap_or(Value::Null),
                    "Fn::Sub" => {
                        let (text, local) = match arg {
                            Value::Array(a) => (a[0].as_str().unwrap_or_default(), Some(self.eval(&a[1]))),
                            other => (other.as_str().unwrap_or_default(), None),
                        };
                        let mut out = text.to_owned();
                        let locals = local.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
                        for (name, val) in locals.iter().chain(self.params.iter()) {
                            if let Some(s) = val.as_str() {
                                out = out.replace(&format!("${{{name}}}"), s);
                            }
                        }
                        Value::String(out)
                    }
                    "Fn::Join" => {
                        let sep = arg[0].as_str().unwrap_or_default();
                        let parts = self.eval(&arg[1]);
                        let parts: Vec<&str> = parts.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        Value::String(parts.join(sep))
                    }
                    "Fn::Split" => {
                        let sep = arg[0].as_str().unwrap_or_default();
                        let s = self.eval(&arg[1]);
                        Value::Array(s.as_str().unwrap_or_default().split(sep).map(|p| Value::String(p.to_owned())).collect())
                    }
                    "Fn::If" => {
                        let cond = arg[0].as_str().unwrap_or_default();
                        let branch = if self.eval(&self.conditions[cond]) == Value::Bool(true) { &arg[1] } else { &arg[2] };
                        self.eval(branch)
                    }
                    "Fn::Not" => Value::Bool(self.eval(&arg[0]) != Value::Bool(true)),
                    "Fn::Equals" => Value::Bool(self.eval(&arg[0]) == self.eval(&arg[1])),
                    _ => Value::Object(m.iter().map(|(k, v)| (k.clone(), self.eval(v))).collect()),
                }
            }
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), self.eval(v))).filter(|(_, v)| !v.is_null()).collect())
            }
            other => other.clone(),
        }
    }
}
