//! The hardware probe: CPU features and cores, NVIDIA GPUs through NVML (loaded at run time,
//! so a host without a driver gets an empty list, never an error).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    pub arch: &'static str,
    pub logical_cores: usize,
    /// SIMD extensions the image kernels can use.
    pub features: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub mem_total_mb: u64,
    pub mem_free_mb: u64,
    pub util_pct: u32,
    /// NVML reports an encoder engine. A hint only: the transcode job proves NVENC by opening
    /// an encode session.
    pub nvenc: bool,
    /// NVML reports a decoder engine.
    pub nvdec: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuProbe {
    /// Why no GPU is listed, when none is (no driver library, no device, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub driver_version: Option<String>,
    pub devices: Vec<GpuInfo>,
}

pub fn cpu() -> CpuInfo {
    let logical_cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    CpuInfo { arch: std::env::consts::ARCH, logical_cores, features: simd_features() }
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if std::arch::is_x86_feature_detected!("sse4.1") {
        f.push("sse4.1");
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        f.push("avx2");
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        f.push("avx512f");
    }
    f
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<&'static str> {
    vec!["neon"]
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<&'static str> {
    Vec::new()
}

/// Lists NVIDIA GPUs. Never fails: problems are reported in `unavailable`.
pub fn gpus() -> GpuProbe {
    use nvml_wrapper::enum_wrappers::device::EncoderType;
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return GpuProbe { unavailable: Some(format!("NVML not available: {e}")), driver_version: None, devices: vec![] }
        }
    };
    let driver_version = nvml.sys_driver_version().ok();
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return GpuProbe { unavailable: Some(format!("NVML device count: {e}")), driver_version, devices: vec![] },
    };
    let mut devices = Vec::new();
    for index in 0..count {
        let Ok(dev) = nvml.device_by_index(index) else { continue };
        let mem = dev.memory_info().ok();
        devices.push(GpuInfo {
            index,
            name: dev.name().unwrap_or_else(|_| "unknown".into()),
            mem_total_mb: mem.as_ref().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
            mem_free_mb: mem.as_ref().map(|m| m.free / (1024 * 1024)).unwrap_or(0),
            util_pct: dev.utilization_rates().map(|u| u.gpu).unwrap_or(0),
            nvenc: dev.encoder_capacity(EncoderType::H264).map(|c| c > 0).unwrap_or(false),
            nvdec: dev.decoder_utilization().is_ok(),
        });
    }
    let unavailable = devices.is_empty().then(|| "no NVIDIA device found".to_owned());
    GpuProbe { unavailable, driver_version, devices }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe against what the kernel says, read independently from `/proc/cpuinfo`: the
    /// core count is at least 1 and at most the processors listed (a cgroup or affinity mask
    /// may allow fewer), and every SIMD extension the probe reports is one the CPU flags list
    /// (and the other way round for the ones it looks for).
    #[test]
    fn cpu_probe_sees_this_machine() {
        let c = cpu();
        assert_eq!(c.arch, std::env::consts::ARCH);
        let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("skipping the /proc comparison: no /proc/cpuinfo");
            return;
        };
        let listed = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        assert!(c.logical_cores >= 1 && c.logical_cores <= listed, "{} cores probed, {listed} listed", c.logical_cores);
        if c.arch == "x86_64" {
            let flags: Vec<&str> = cpuinfo
                .lines()
                .find(|l| l.starts_with("flags"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, f)| f.split_whitespace().collect())
                .unwrap_or_default();
            for (ours, proc_name) in [("sse4.1", "sse4_1"), ("avx2", "avx2"), ("avx512f", "avx512f")] {
                assert_eq!(c.features.contains(&ours), flags.contains(&proc_name), "{ours}: probe {:?}", c.features);
            }
            // Every x86_64 CPU kiln runs on has SSE4.1 (the resize kernels' baseline).
            assert!(c.features.contains(&"sse4.1"), "{:?}", c.features);
        }
    }

    /// The GPU probe agrees with the driver's own view: with NVIDIA's kernel driver loaded
    /// (`/proc/driver/nvidia/gpus/*`), it lists exactly those devices, each with a name and
    /// memory; without it, no device and a reason. Never both, never neither.
    #[test]
    fn gpu_probe_never_fails() {
        let g = gpus();
        assert_eq!(g.unavailable.is_some(), g.devices.is_empty(), "{g:?}");
        let driver_gpus = std::fs::read_dir("/proc/driver/nvidia/gpus").map(|d| d.count()).unwrap_or(0);
        let nvml_present = g.unavailable.as_deref().is_none_or(|r| !r.starts_with("NVML not available"));
        if driver_gpus > 0 && nvml_present {
            assert_eq!(g.devices.len(), driver_gpus, "{g:?}");
            assert!(g.driver_version.is_some());
            for d in &g.devices {
                assert!(!d.name.is_empty() && d.mem_total_mb > 0 && d.mem_free_mb <= d.mem_total_mb, "{d:?}");
            }
        } else if driver_gpus == 0 {
            assert!(g.devices.is_empty(), "devices listed without NVIDIA's driver: {g:?}");
            assert!(!g.unavailable.as_deref().unwrap_or_default().is_empty());
        }
        // Serialises as `kiln probe` prints it.
        let v = serde_json::to_value(&g).unwrap();
        assert!(v["devices"].is_array());
    }
}
