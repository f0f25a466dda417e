//! The deployment files: docker/, k8s/ (every kustomize overlay, rendered) and deploy/sam/.
//!
//! - They pass their linters (scripts/lint-deploy.sh: hadolint, kubernetes-validate strict
//!   against Kubernetes 1.37, the KEDA ScaledObject schema, cfn-lint), which do reject a
//!   broken manifest.
//! - Their settings agree with each other and with kiln ([`problems`]): the config each kiln
//!   container gets (rendered ConfigMaps, Secrets, env, downward API) passes
//!   `kiln config check`; every pool KEDA scales on a topic has pods reading that topic with
//!   that group from those brokers; a topic a GPU pool reads is read by no CPU pod; no
//!   pod's store is pod-local; pods run the image's entrypoint and have stable identities;
//!   grace periods cover the drain; slots match the cores requested.
//! - The checks catch the faults the manifests once had (each one put back, one at a time).
//! - The function tier (SAM) runs the same image entrypoint with a config kiln accepts.

mod deploy;

use deploy::{config_check, container_env, find, kiln_workloads, millicores, name, render, Cfn, Kiln, POD_IP};
use kiln_tests::workspace_root;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn lint(k8s: &Path) -> std::process::Output {
    Command::new("bash").arg(workspace_root().join("scripts/lint-deploy.sh")).arg(k8s).output().unwrap()
}

fn overlays() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(workspace_root().join("k8s/overlays")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Seconds kiln serve may still spend after the drain: Kafka offsets (10 s), the last
/// capacity report (3 s), open HTTP connections (5 s) (worker/src/modes.rs, `serve`).
const AFTER_DRAIN_MS: u64 = 18_000;

/// Everything inconsistent in one rendered overlay, as sentences; and how many things were
/// checked (containers, ScaledObjects).
fn problems(docs: &[Value]) -> (Vec<String>, usize, usize) {
    let mut bad = Vec::new();
    let known: Vec<String> = kiln_worker::config::ENV_KEYS.iter().map(|(s, _)| format!("KILN_{s}")).collect();
    let workloads = kiln_workloads(docs);
    let mut summaries: BTreeMap<String, Value> = BTreeMap::new();
    let mut envs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for k in &workloads {
        let w = k.name().to_owned();
        if !k.container["command"].is_null() || !k.container["args"].is_null() {
            bad.push(format!("{w}: sets command/args instead of running the image's entrypoint"));
        }
        let env = match container_env(docs, k) {
            Ok(e) => e,
            Err(e) => {
                bad.push(format!("{w}: {e}"));
                continue;
            }
        };
        for (key, _) in &env {
            if key.starts_with("KILN_") && key != "KILN_CONFIG" && !known.contains(key) {
                bad.push(format!("{w}: {key} is not a variable kiln reads"));
            }
        }
        match config_check(docs, k) {
            Ok(s) => {
                summaries.insert(w.clone(), s);
            }
            Err(e) => bad.push(format!("{w}: kiln config check: {e}")),
        }
        envs.insert(w, env);
    }
    for k in &workloads {
        let w = k.name();
        let Some(s) = summaries.get(w) else { continue };
        let store = s["store"].as_str().unwrap_or_default();
        if !store.starts_with("s3://") {
            bad.push(format!("{w}: store {store} is pod-local (not s3://): no other pod can resume its jobs"));
        }
        let grace = s["grace_ms"].as_u64().unwrap_or(0);
        let pre_stop = k.container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0) * 1000;
        let period = k.spec()["terminationGracePeriodSeconds"].as_u64().unwrap_or(30) * 1000;
        if s["mode"] == "serve" {
            if period < grace + pre_stop + AFTER_DRAIN_MS {
                bad.push(format!("{w}: terminationGracePeriodSeconds {period} ms < preStop {pre_stop} + grace {grace} + {AFTER_DRAIN_MS} ms: SIGKILL cuts the drain"));
            }
            if s["worker_id"] != k.pod_name().as_str() {
                bad.push(format!("{w}: worker id {} is not the pod name", s["worker_id"]));
            }
            if !s["advertise_url"].as_str().is_some_and(|u| u.contains(POD_IP)) {
                bad.push(format!("{w}: advertises {} to the router, not the pod's address", s["advertise_url"]));
            }
            if !s["kafka"].is_null() && s["kafka"]["instance_id"] != k.pod_name().as_str() {
                bad.push(format!("{w}: Kafka static membership id {} is not the pod name", s["kafka"]["instance_id"]));
            }
            let cores = |which: &str| millicores(&k.container["resources"][which]["cpu"]);
            let slots = s["cpu_slots"].as_u64().unwrap_or(0);
            if slots == 0 || cores("requests") != Some(slots * 1000) || cores("limits") != Some(slots * 1000) {
                bad.push(format!("{w}: {slots} job slots but CPU requests {:?} / limits {:?} millicores", cores("requests"), cores("limits")));
            }
            match s["router_url"].as_str() {
                None => bad.push(format!("{w}: no router URL: capacity reports go nowhere")),
                Some(u) => {
                    let host = url::Url::parse(u).ok().and_then(|u| u.host_str().map(|h| h.split('.').next().unwrap_or(h).to_owned()));
                    let svc = host.as_deref().and_then(|h| find(docs, "Service", h));
                    let routes = svc.is_some_and(|svc| {
                        workloads.iter().any(|r| {
                            summaries.get(r.name()).is_some_and(|rs| rs["mode"] == "route")
                                && svc["spec"]["selector"].as_object().into_iter().flatten().all(|(key, v)| {
                                    r.workload["spec"]["template"]["metadata"]["labels"][key] == *v
                                })
                        })
                    });
                    if !routes {
                        bad.push(format!("{w}: router URL {u} is not a Service in front of a `kiln route` workload"));
                    }
                }
            }
        }
        if s["mode"] == "route" {
            match route_policy_serverless(docs) {
                Err(e) => bad.push(format!("{w}: route policy: {e}")),
                Ok(serverless) => {
                    let lambda = s["route_lambda"].as_str();
                    if serverless && lambda.is_none() {
                        bad.push(format!("{w}: the route policy enables the serverless tier but route.lambda (KILN_ROUTE_LAMBDA) is unset: nothing to invoke it with"));
                    }
                    if !serverless && lambda.is_some() {
                        bad.push(format!("{w}: route.lambda is {lambda:?} but the route policy disables the serverless tier"));
                    }
                }
            }
        }
        let gpu = k.gpus() > 0;
        let cuda = k.container["image"].as_str().is_some_and(|i| i.contains("cuda"));
        if gpu != cuda {
            bad.push(format!("{w}: {} GPUs requested with image {}", k.gpus(), k.container["image"]));
        }
        if gpu {
            let spec = k.spec();
            if spec["nodeSelector"]["nvidia.com/gpu.present"] != "true" {
                bad.push(format!("{w}: GPU pod without the nvidia.com/gpu.present node selector"));
            }
            if !spec["tolerations"].as_array().into_iter().flatten().any(|t| t["key"] == "nvidia.com/gpu") {
                bad.push(format!("{w}: GPU pod without the nvidia.com/gpu toleration"));
            }
        }
    }
    // Kafka: which workloads read which topic, with which group, from which brokers.
    let readers: Vec<(&Kiln, &Value)> =
        workloads.iter().filter_map(|k| summaries.get(k.name()).filter(|s| !s["kafka"].is_null()).map(|s| (k, &s["kafka"]))).collect();
    for (g, gk) in readers.iter().filter(|(k, _)| k.gpus() > 0) {
        for (c, ck) in readers.iter().filter(|(k, _)| k.gpus() == 0) {
            if ck["jobs_topic"] == gk["jobs_topic"] {
                bad.push(format!("{}: reads the GPU pool {}'s topic {}: GPU work would reach a CPU pod", c.name(), g.name(), ck["jobs_topic"]));
            }
        }
    }
    let mut scaled = 0;
    for so in docs.iter().filter(|d| d["kind"] == "ScaledObject") {
        let target = &so["spec"]["scaleTargetRef"];
        let tkind = target["kind"].as_str().unwrap_or("Deployment");
        let tname = target["name"].as_str().unwrap_or_default();
        if !workloads.iter().any(|k| k.workload["kind"] == tkind && k.name() == tname) {
            bad.push(format!("ScaledObject {}: no kiln {tkind} {tname} to scale", name(so)));
            continue;
        }
        for t in so["spec"]["triggers"].as_array().into_iter().flatten().filter(|t| t["type"] == "kafka") {
            scaled += 1;
            let m = &t["metadata"];
            let kafka = summaries.get(tname).map(|s| &s["kafka"]).filter(|k| !k.is_null());
            let Some(kafka) = kafka else {
                bad.push(format!("ScaledObject {}: scales {tname} on Kafka lag, but its pods read no Kafka", name(so)));
                continue;
            };
            let env = &envs[tname];
            let from_env = |key: &str| m[format!("{key}FromEnv")].as_str().and_then(|v| env.iter().find(|(k, _)| k == v)).map(|(_, v)| v.as_str());
            let brokers = m["bootstrapServers"].as_str().or_else(|| from_env("bootstrapServers"));
            let topic = m["topic"].as_str().or_else(|| from_env("topic"));
            let group = m["consumerGroup"].as_str().or_else(|| from_env("consumerGroup"));
            if topic != kafka["jobs_topic"].as_str() || group != kafka["group"].as_str() {
                bad.push(format!(
                    "ScaledObject {}: scales {tname} on topic {topic:?} group {group:?}, but its pods read topic {} with group {}",
                    name(so),
                    kafka["jobs_topic"],
                    kafka["group"]
                ));
            }
            if brokers != kafka["brokers"].as_str() {
                bad.push(format!("ScaledObject {}: watches brokers {brokers:?}, its pods use {}", name(so), kafka["brokers"]));
            }
        }
    }
    (bad, summaries.len(), scaled)
}

/// Whether the router's placement policy as rendered (the kiln-route-policy ConfigMap),
/// loaded the way `kiln route` loads it, enables the serverless tier.
fn route_policy_serverless(docs: &[Value]) -> Result<bool, String> {
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && name(d).starts_with("kiln-route-policy"))
        .ok_or("no kiln-route-policy ConfigMap")?;
    let text = cm["data"]["policy.toml"].as_str().ok_or("no policy.toml in kiln-route-policy")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    kiln_worker::route::load_policy(&path.to_string_lossy()).map(|p| p.serverless.enabled).map_err(|e| e.to_string())
}

#[test]
fn dockerfiles_manifests_and_template_pass_their_linters() {
    let out = lint(&workspace_root().join("k8s"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("prod: ") && said.contains("2 KEDA"), "{said}");
}

#[test]
fn a_broken_manifest_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp").arg("-r").arg(workspace_root().join("k8s")).arg(dir.path()).status().unwrap();
    assert!(status.success());
    let f = dir.path().join("k8s/components/gpu-pool/gpu-pool.yaml");
    let text = std::fs::read_to_string(&f).unwrap().replace("terminationGracePeriodSeconds", "terminationGracePeriodSecs");
    std::fs::write(&f, text).unwrap();
    let out = lint(&dir.path().join("k8s"));
    assert!(!out.status.success(), "an unknown field passed validation");
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminationGracePeriodSecs"));
}

#[test]
fn every_overlay_is_consistent_and_passes_kilns_config_check() {
    let mut seen = Vec::new();
    for overlay in overlays() {
        let docs = render(&overlay);
        let (bad, checked, scaled) = problems(&docs);
        assert!(bad.is_empty(), "{}:\n{}", overlay.display(), bad.join("\n"));
        seen.push((overlay.file_name().unwrap().to_string_lossy().into_owned(), checked, scaled));
    }
    // dev: the CPU pool and the router, no KEDA; prod: both pools and the router, both scaled.
    assert_eq!(seen, [("dev".to_owned(), 2, 0), ("prod".to_owned(), 3, 2)]);
}

/// Applies `edit` to a copy of the rendered prod overlay and returns the problems found.
fn problems_after(edit: impl FnOnce(&mut Vec<Value>)) -> Vec<String> {
    let mut docs = render(&workspace_root().join("k8s/overlays/prod"));
    edit(&mut docs);
    problems(&docs).0
}

fn doc_mut<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap()
}

fn set_env(docs: &mut [Value], workload: &str, key: &str, value: Option<&str>) {
    let w = doc_mut(docs, "StatefulSet", workload);
    let env = w["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != key);
    if let Some(v) = value {
        env.push(json!({"name": key, "value": v}));
    }
}

fn env_map_set(docs: &mut [Value], key: &str, value: &str) {
    let cm = docs.iter_mut().find(|d| d["kind"] == "ConfigMap" && name(d).starts_with("kiln-env")).unwrap();
    cm["data"][key] = json!(value);
}

fn assert_caught(bad: &[String], needle: &str) {
    assert!(bad.iter().any(|b| b.contains(needle)), "expected a problem mentioning {needle:?}, got {bad:#?}");
}

#[test]
fn the_checks_catch_the_faults_the_manifests_once_had() {
    // KEDA scaling the GPU pool on a topic its pods never read.
    let bad = problems_after(|d| doc_mut(d, "ScaledObject", "kiln-gpu")["spec"]["triggers"][0]["metadata"]["topic"] = json!("kiln.jobs"));
    assert_caught(&bad, "ScaledObject kiln-gpu: scales kiln-gpu on topic Some(\"kiln.jobs\")");
    // No brokers set: the pods read no Kafka at all.
    let bad = problems_after(|d| {
        let cm = d.iter_mut().find(|x| x["kind"] == "ConfigMap" && name(x).starts_with("kiln-env")).unwrap();
        cm["data"].as_object_mut().unwrap().remove("KILN_KAFKA_BROKERS");
    });
    assert_caught(&bad, "but its pods read no Kafka");
    // Both pools on one topic: GPU work could land on a CPU pod.
    let bad = problems_after(|d| set_env(d, "kiln-cpu", "KILN_KAFKA_JOBS_TOPIC", Some("kiln.jobs.gpu")));
    assert_caught(&bad, "GPU work would reach a CPU pod");
    // A pod-local store.
    let bad = problems_after(|d| env_map_set(d, "KILN_STORE_URL", "file:///var/lib/kiln/store/"));
    assert_caught(&bad, "is pod-local");
    // No router URL.
    let bad = problems_after(|d| {
        let cm = d.iter_mut().find(|x| x["kind"] == "ConfigMap" && name(x).starts_with("kiln-env")).unwrap();
        cm["data"].as_object_mut().unwrap().remove("KILN_ROUTER_URL");
    });
    assert_caught(&bad, "no router URL");
    // A config kiln refuses: serve on 0.0.0.0 without tokens.
    let bad = problems_after(|d| set_env(d, "kiln-gpu", "KILN_HTTP_TOKENS_FILE", None));
    assert_caught(&bad, "kiln-gpu: kiln config check: kiln: configuration key http.tokens");
    // A setting kiln does not read, and a grace period shorter than the drain.
    let bad = problems_after(|d| set_env(d, "kiln-cpu", "KILN_KAFKA_TOPIC", Some("x")));
    assert_caught(&bad, "KILN_KAFKA_TOPIC is not a variable kiln reads");
    let bad = problems_after(|d| set_env(d, "kiln-gpu", "KILN_SHUTDOWN_GRACE_MS", Some("120000")));
    assert_caught(&bad, "kiln-gpu: terminationGracePeriodSeconds");
    // A random identity, and a command that is not the image's entrypoint.
    let bad = problems_after(|d| set_env(d, "kiln-cpu", "KILN_WORKER_ID", None));
    assert_caught(&bad, "kiln-cpu: worker id");
    let bad = problems_after(|d| doc_mut(d, "StatefulSet", "kiln-cpu")["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["serve"]));
    assert_caught(&bad, "instead of running the image's entrypoint");
    // A router whose policy goes serverless with no Lambda invoker (the old route policy's
    // excuse for disabling the tier), and the reverse.
    let bad = problems_after(|d| {
        let env = doc_mut(d, "Deployment", "kiln-route")["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap();
        env.retain(|e| e["name"] != "KILN_ROUTE_LAMBDA");
    });
    assert_caught(&bad, "kiln-route: the route policy enables the serverless tier but route.lambda");
    let bad = problems_after(|d| {
        let cm = d.iter_mut().find(|x| x["kind"] == "ConfigMap" && name(x).starts_with("kiln-route-policy")).unwrap();
        let text = cm["data"]["policy.toml"].as_str().unwrap().replace("enabled = true", "enabled = false");
        cm["data"]["policy.toml"] = json!(text);
    });
    assert_caught(&bad, "but the route policy disables the serverless tier");
}

fn entrypoint(dockerfile: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("docker").join(dockerfile)).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("ENTRYPOINT")).collect();
    assert_eq!(lines.len(), 1, "{dockerfile}: one ENTRYPOINT");
    lines[0].trim_start_matches("ENTRYPOINT").trim().to_owned()
}

#[test]
fn the_function_runs_the_same_entrypoint_with_a_config_kiln_accepts() {
    // Both images: one entrypoint, the kiln binary; the pods override none (checked above).
    assert_eq!(entrypoint("Dockerfile"), r#"["/usr/local/bin/kiln"]"#);
    assert_eq!(entrypoint("Dockerfile.cuda"), entrypoint("Dockerfile"));

    let text = std::fs::read_to_string(workspace_root().join("deploy/sam/template.yaml")).unwrap();
    let t = deploy::yaml_docs(&text).remove(0);
    let f = &t["Resources"]["Function"]["Properties"];
    assert_eq!(f["PackageType"], "Image");
    let image_config = &f["ImageConfig"];
    assert!(image_config["Command"].is_null() && image_config["EntryPoint"].is_null(), "the template overrides the image: {image_config}");
    assert_eq!(f["FunctionUrlConfig"]["InvokeMode"], "RESPONSE_STREAM");
    assert!(f["ProvisionedConcurrencyConfig"]["ProvisionedConcurrentExecutions"].is_object(), "{f}");
    assert!(f["AutoPublishAlias"].is_string(), "provisioned concurrency needs an alias");

    for (sources, outputs) in [("", ""), ("media-in,media-raw", "media-out")] {
        let mut params = BTreeMap::new();
        params.insert("AWS::Region".to_owned(), json!("eu-west-1"));
        params.insert("StoreBucket".to_owned(), json!("kiln-store-prod"));
        params.insert("SourceBuckets".to_owned(), json!(sources.split(',').collect::<Vec<_>>()));
        params.insert("OutputBuckets".to_owned(), json!(outputs.split(',').collect::<Vec<_>>()));
        let cfn = Cfn { params, conditions: &t["Conditions"] };
        let env = cfn.eval(&f["Environment"]["Variables"]);
        let vars: Vec<(String, String)> =
            env.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_owned())).collect();
        let summary = deploy::run_config_check(&[], &json!({}), &json!({}), vars.clone()).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
        assert_eq!(summary["mode"], "lambda");
        assert_eq!(summary["tier"], "serverless");
        assert_eq!(summary["store"], "s3://kiln-store-prod/");
        if !sources.is_empty() {
            assert!(vars.contains(&("KILN_SOURCES_ALLOW".into(), "s3://media-in/,s3://media-raw/".into())), "{vars:?}");
            assert!(vars.contains(&("KILN_OUTPUTS_ALLOW".into(), "s3://media-out/".into())), "{vars:?}");
        }
        // IAM: S3 only, and only on the store and the named buckets.
        let policies = cfn.eval(&f["Policies"]);
        let mut resources = Vec::new();
        for p in policies.as_array().unwrap() {
            for s in p["Statement"].as_array().unwrap() {
                assert!(s["Action"].as_array().unwrap().iter().all(|a| a.as_str().unwrap().starts_with("s3:")), "{s}");
                match &s["Resource"] {
                    Value::Array(rs) => resources.extend(rs.iter().map(|r| r.as_str().unwrap().to_owned())),
                    r => resources.push(r.as_str().unwrap().to_owned()),
                }
            }
        }
        let allowed: Vec<&str> = ["kiln-store-prod"].into_iter().chain(sources.split(',')).chain(outputs.split(',')).filter(|b| !b.is_empty()).collect();
        for r in &resources {
            let bucket = r.trim_start_matches("arn:aws:s3:::").split('/').next().unwrap();
            assert!(allowed.contains(&bucket), "IAM resource {r} is outside the buckets {allowed:?}");
        }
        assert!(resources.contains(&"arn:aws:s3:::kiln-store-prod/*".to_owned()), "{resources:?}");
        assert_eq!(resources.len(), 2 + allowed.len() - 1, "{resources:?}");
    }

    // kiln route's side. The prod policy invokes this template's function (its default name,
    // the live alias); the router's managed policy may invoke that alias and nothing else; the
    // function trusts the tenant the router names (only IAM principals can invoke it).
    let name = t["Parameters"]["FunctionName"]["Default"].as_str().expect("a default function name");
    assert_eq!(f["FunctionName"], json!({"Ref": "FunctionName"}));
    let route_policy = std::fs::read_to_string(workspace_root().join("k8s/overlays/prod/route-policy.toml")).unwrap();
    assert!(route_policy.lines().any(|l| l.trim() == format!("function = \"{name}:live\"")), "route-policy.toml does not invoke {name}:live");
    let invoke = &t["Resources"]["RouterInvokePolicy"]["Properties"]["PolicyDocument"]["Statement"];
    assert_eq!(invoke.as_array().map(Vec::len), Some(1), "{invoke}");
    assert_eq!(invoke[0]["Effect"], "Allow");
    assert_eq!(invoke[0]["Action"], json!(["lambda:InvokeFunction", "lambda:InvokeWithResponseStream"]));
    assert_eq!(invoke[0]["Resource"], json!({"Ref": "FunctionAliaslive"}), "the live alias only");
    assert_eq!(f["Environment"]["Variables"]["KILN_LAMBDA_TRUST_TENANT_HEADER"], "true");
    assert_eq!(f["FunctionUrlConfig"]["AuthType"], "AWS_IAM", "a trusted tenant header needs IAM-only invocation");
}
