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

    #[test]
    fn cpu_probe_sees_this_machine() {
        let c = cpu();
        assert!(c.logical_cores >= 1);
        assert_eq!(c.arch, std::env::consts::ARCH);
    }

    #[test]
    fn gpu_probe_never_fails() {
        let g = gpus();
        // On a machine without NVIDIA's driver the reason is given instead of devices.
        assert!(g.unavailable.is_some() || !g.devices.is_empty());
    }
}
