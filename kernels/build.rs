//! Loads FFmpeg on first use instead of at process start (x86-64 Linux).
//!
//! Debian's FFmpeg libraries pull in ~125 more shared libraries, most of them `BIND_NOW`, and
//! resolving their symbols was most of kiln's start-up (~46 ms of `kiln --version`, before any
//! job; benches/RESULTS.md, "Render: PDF output"). A thumbnail, render or infer job, a Lambda
//! cold start and every `kiln` command paid it without touching video.
//!
//! This script writes one trampoline per function the five FFmpeg libraries export
//! (`nm -D`), linked whole into the binary, so the linker finds every FFmpeg symbol defined
//! and drops the libraries (`--as-needed`). A trampoline jumps through a table of pointers;
//! the first call made while the table is empty saves the argument registers, loads the
//! libraries with `dlopen` and fills the whole table with `dlsym` (once, under
//! `pthread_once`), and continues into the real function. A library that cannot be loaded
//! then ends the process with a message naming it (as the dynamic loader did at start before).
//!
//! `KILN_FFMPEG_LINK=direct` at build time, another target, or missing binutils: FFmpeg is
//! linked as usual.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// In `dlopen` order: each after the ones it needs.
const LIBS: [&str; 5] = ["avutil", "swresample", "swscale", "avcodec", "avformat"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KILN_FFMPEG_LINK");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || std::env::var("KILN_FFMPEG_LINK").as_deref() == Ok("direct") {
        return;
    }
    match stubs() {
        Ok(()) => {}
        Err(e) => println!("cargo:warning=FFmpeg linked at start-up (no lazy loading): {e}"),
    }
}

fn stubs() -> Result<(), String> {
    let libdir = Command::new("pkg-config")
        .args(["--variable=libdir", "libavcodec"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu".to_owned());
    let mut sonames = Vec::new();
    let mut symbols: Vec<(String, usize)> = Vec::new();
    for (i, lib) in LIBS.iter().enumerate() {
        let path = Path::new(&libdir).join(format!("lib{lib}.so"));
        println!("cargo:rerun-if-changed={}", path.display());
        sonames.push(soname(&path)?);
        for name in functions(&path)? {
            if !symbols.iter().any(|(n, _)| *n == name) {
                symbols.push((name, i));
            }
        }
    }
    if symbols.is_empty() {
        return Err("no FFmpeg functions found".into());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    std::fs::write(out.join("ffstub.S"), assembly(&symbols)).map_err(|e| e.to_string())?;
    std::fs::write(out.join("ffstub_load.c"), loader(&sonames, &symbols)).map_err(|e| e.to_string())?;
    cc::Build::new()
        .file(out.join("ffstub.S"))
        .file(out.join("ffstub_load.c"))
        .cargo_metadata(false)
        .try_compile("kiln_ffstub")
        .map_err(|e| e.to_string())?;
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static:+whole-archive=kiln_ffstub");
    Ok(())
}

fn soname(path: &Path) -> Result<String, String> {
    let o = Command::new("objdump").arg("-p").arg(path).output().map_err(|e| format!("objdump: {e}"))?;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("SONAME").map(|s| s.trim().to_owned()))
        .ok_or_else(|| format!("{}: no SONAME", path.display()))
}

/// The functions `path` exports, without their version suffix.
fn functions(path: &Path) -> Result<Vec<String>, String> {
    let o = Command::new("nm").args(["-D", "--defined-only"]).arg(path).output().map_err(|e| format!("nm: {e}"))?;
    if !o.status.success() {
        return Err(format!("nm {} failed", path.display()));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            let name = name.split('@').next()?;
            (kind == "T" && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then(|| name.to_owned())
        })
        .collect())
}

fn assembly(symbols: &[(String, usize)]) -> String {
    let mut s = String::new();
    let n = symbols.len();
    let _ = write!(
        s,
        r#"    .section .note.GNU-stack,"",@progbits
    .bss
    .p2align 3
    .globl kiln_ff_ptrs
    .hidden kiln_ff_ptrs
kiln_ff_ptrs:
    .zero {size}
    .text
    .p2align 4
    .type kiln_ff_slow,@function
kiln_ff_slow:
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %r8
    push %r9
    push %rax
    push %r11
    sub $136, %rsp
    movdqu %xmm0, 0(%rsp)
    movdqu %xmm1, 16(%rsp)
    movdqu %xmm2, 32(%rsp)
    movdqu %xmm3, 48(%rsp)
    movdqu %xmm4, 64(%rsp)
    movdqu %xmm5, 80(%rsp)
    movdqu %xmm6, 96(%rsp)
    movdqu %xmm7, 112(%rsp)
    call kiln_ff_load_all
    movdqu 0(%rsp), %xmm0
    movdqu 16(%rsp), %xmm1
    movdqu 32(%rsp), %xmm2
    movdqu 48(%rsp), %xmm3
    movdqu 64(%rsp), %xmm4
    movdqu 80(%rsp), %xmm5
    movdqu 96(%rsp), %xmm6
    movdqu 112(%rsp), %xmm7
    add $136, %rsp
    pop %r11
    pop %rax
    pop %r9
    pop %r8
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    leaq kiln_ff_ptrs(%rip), %r10
    jmp *(%r10,%r11,8)
    .size kiln_ff_slow, .-kiln_ff_slow
"#,
        size = 8 * n
    );
    for (i, (name, _)) in symbols.iter().enumerate() {
        let _ = write!(
            s,
            r#"    .p2align 4
    .globl {name}
    .type {name},@function
{name}:
    movq kiln_ff_ptrs+{off}(%rip), %r11
    testq %r11, %r11
    jz 1f
    jmp *%r11
1:  movl ${i}, %r11d
    jmp kiln_ff_slow
    .size {name}, .-{name}
"#,
            off = 8 * i
        );
    }
    s
}

fn loader(sonames: &[String], symbols: &[(String, usize)]) -> String {
    let mut s = String::from(
        "#include <dlfcn.h>\n#include <pthread.h>\n#include <stdio.h>\n#include <stdlib.h>\n\n\
         extern void *kiln_ff_ptrs[] __attribute__((visibility(\"hidden\")));\n\n",
    );
    let _ = writeln!(s, "static const char *const sonames[] = {{");
    for so in sonames {
        let _ = writeln!(s, "    \"{so}\",");
    }
    let _ = writeln!(s, "}};\n\nstatic const char *const names[] = {{");
    for (name, _) in symbols {
        let _ = writeln!(s, "    \"{name}\",");
    }
    let _ = writeln!(s, "}};\n\nstatic const unsigned char lib_of[] = {{");
    for (_, lib) in symbols {
        let _ = writeln!(s, "    {lib},");
    }
    let _ = write!(
        s,
        r#"}};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {{
    void *handles[{libs}];
    for (int i = 0; i < {libs}; i++) {{
        handles[i] = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (!handles[i]) {{
            fprintf(stderr, "kiln: cannot load FFmpeg (%s): %s\n", sonames[i], dlerror());
            abort();
        }}
    }}
    for (int j = 0; j < {n}; j++) {{
        void *p = dlsym(handles[lib_of[j]], names[j]);
        if (!p) {{
            fprintf(stderr, "kiln: %s has no %s\n", sonames[lib_of[j]], names[j]);
            abort();
        }}
        __atomic_store_n(&kiln_ff_ptrs[j], p, __ATOMIC_RELEASE);
    }}
}}

void kiln_ff_load_all(void) {{
    pthread_once(&once, load);
}}
"#,
        libs = sonames.len(),
        n = symbols.len()
    );
    s
}
