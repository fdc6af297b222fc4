//! Pure platform rules for verification: which platforms an index offers, which required ones it lacks, and
//! whether an image config agrees with the platform its index entry announces.

use oci::{Descriptor, ImageIndex, Platform};

use crate::transfer::PlatformSpec;

/// The annotation Docker buildx puts on the attestation manifests it lists inside an index.
pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The digest of the platform manifest a buildx attestation manifest describes.
pub const DOCKER_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// Whether an index entry is a buildx attestation manifest (an attestation, not a platform).
pub fn is_attestation_entry(d: &Descriptor) -> bool {
    d.annotations.get(DOCKER_REFERENCE_TYPE).is_some_and(|t| t == "attestation-manifest")
}

/// The platforms an index offers: every entry with a platform that is not a buildx attestation manifest.
pub fn index_platforms(index: &ImageIndex) -> Vec<&Platform> {
    index.manifests.iter().filter(|d| !is_attestation_entry(d)).filter_map(|d| d.platform.as_ref()).collect()
}

/// `os/arch[/variant]` of a spec, as given on the command line or in `required_platforms`.
pub fn spec_name(s: &PlatformSpec) -> String {
    match &s.variant {
        Some(v) => format!("{}/{}/{v}", s.os, s.arch),
        None => format!("{}/{}", s.os, s.arch),
    }
}

/// The required platforms that none of `offered` satisfies, as `os/arch[/variant]` strings, in the order
/// required. A spec without a variant is satisfied by any variant of its os/arch.
pub fn missing_from(offered: &[&Platform], required: &[PlatformSpec]) -> Vec<String> {
    required.iter().filter(|r| !offered.iter().any(|p| r.matches(p))).map(spec_name).collect()
}

/// The required platforms an index lacks (attestation manifests do not count as platforms). The one check
/// behind `wharf verify --require` and `[[tags]] required_platforms`.
pub fn missing_platforms(index: &ImageIndex, required: &[PlatformSpec]) -> Vec<String> {
    missing_from(&index_platforms(index), required)
}

/// `arm64` images are `v8` whether or not they say so (as containerd normalises it).
fn normal_variant<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (arch, variant) {
        ("arm64", Some("v8")) => None,
        (_, v) => v.filter(|v| !v.is_empty()),
    }
}

/// Whether a config's platform (`os`, `architecture`, `variant`) agrees with its index entry's. A config
/// without a variant agrees with any variant of its architecture (many builders leave it out); `os.version`
/// is compared when the index entry has one.
pub fn config_agrees(entry: &Platform, config: &Platform) -> bool {
    if entry.os != config.os || entry.architecture != config.architecture {
        return false;
    }
    let ev = normal_variant(&entry.architecture, entry.variant.as_deref());
    let cv = normal_variant(&config.architecture, config.variant.as_deref());
    if cv.is_some() && ev != cv {
        return false;
    }
    match &entry.os_version {
        Some(v) => config.os_version.as_ref() == Some(v),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            os_version: None,
            os_features: vec![],
            variant: variant.map(Into::into),
            features: vec![],
        }
    }

    fn spec(s: &str) -> PlatformSpec {
        PlatformSpec::parse(s).unwrap()
    }

    #[test]
    fn verify_missing_from_reports_each_required_platform_absent() {
        let amd = p("linux", "amd64", None);
        let arm = p("linux", "arm", Some("v7"));
        let offered = [&amd, &arm];
        let required = [spec("linux/amd64"), spec("linux/arm64"), spec("linux/arm/v7"), spec("linux/arm/v6")];
        assert_eq!(missing_from(&offered, &required), vec!["linux/arm64", "linux/arm/v6"]);
        assert!(missing_from(&offered, &[spec("linux/arm")]).is_empty(), "no variant: any variant will do");
    }

    #[test]
    fn verify_config_agreement() {
        assert!(config_agrees(&p("linux", "arm64", Some("v8")), &p("linux", "arm64", None)));
        assert!(config_agrees(&p("linux", "arm64", None), &p("linux", "arm64", Some("v8"))));
        assert!(config_agrees(&p("linux", "arm", Some("v7")), &p("linux", "arm", None)));
        assert!(!config_agrees(&p("linux", "arm", Some("v7")), &p("linux", "arm", Some("v6"))));
        assert!(!config_agrees(&p("linux", "arm64", None), &p("linux", "amd64", None)));
        assert!(!config_agrees(&p("linux", "amd64", None), &p("windows", "amd64", None)));
        let mut win = p("windows", "amd64", None);
        win.os_version = Some("10.0.20348.1".into());
        let mut cfg = win.clone();
        assert!(config_agrees(&win, &cfg));
        cfg.os_version = Some("10.0.17763.1".into());
        assert!(!config_agrees(&win, &cfg));
        cfg.os_version = None;
        assert!(!config_agrees(&win, &cfg));
    }
}
