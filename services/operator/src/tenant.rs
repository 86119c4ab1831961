//! A validated tenant: the checks a `CognitionTenant` spec must pass before anything is
//! created, and the parsed values (millicores, bytes, seconds) the resource builders use.

use std::fmt;

use kube::ResourceExt;

use crate::crd::{CognitionTenant, Llm, Network, Sandbox};
use crate::{names, quantity};

/// Tenant namespaces are `cognition-tenant-<name>`.
pub const NAMESPACE_PREFIX: &str = "cognition-tenant-";

/// The most sessions one tenant may declare.
pub const MAX_SESSIONS: u32 = 1000;

/// A `CognitionTenant` whose spec passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// The CognitionTenant's name.
    pub name: String,
    /// The CognitionTenant's own namespace (where the LLM Secret is read).
    pub home_namespace: String,
    /// `cognition-tenant-<name>`.
    pub namespace: String,
    pub max_sessions: u32,
    pub sandbox_cpu_millis: u64,
    pub sandbox_memory_bytes: u64,
    pub storage_gb: u32,
    /// 0: no limit.
    pub max_sandbox_duration_secs: u64,
    pub llm: Llm,
    pub sandbox: Sandbox,
    pub network: Network,
}

/// Every reason a spec was rejected, each naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl Tenant {
    /// Checks the resource and parses its values; every problem is reported at once.
    pub fn from_resource(resource: &CognitionTenant) -> Result<Tenant, Invalid> {
        let mut problems = Vec::new();
        let name = resource.name_any();
        let max_name = 63 - NAMESPACE_PREFIX.len();
        if let Err(reason) = names::dns_label(&name) {
            problems.push(format!("metadata.name: {reason}"));
        } else if name.len() > max_name {
            problems.push(format!(
                "metadata.name: {name:?} is longer than {max_name} characters (the tenant \
                 namespace {NAMESPACE_PREFIX}<name> must fit in 63)"
            ));
        }
        let spec = &resource.spec;
        if spec.display_name.trim().is_empty() {
            problems.push("spec.displayName: must not be empty".into());
        }
        if !looks_like_email(&spec.admin_email) {
            problems.push(format!(
                "spec.adminEmail: {:?} is not an email address (expected e.g. admin@acme.com)",
                spec.admin_email
            ));
        }
        let quotas = &spec.quotas;
        if quotas.max_sessions == 0 || quotas.max_sessions > MAX_SESSIONS {
            problems.push(format!(
                "spec.quotas.maxSessions: {} must be between 1 and {MAX_SESSIONS}",
                quotas.max_sessions
            ));
        }
        let cpu = quantity::parse_cpu_millis(&quotas.max_cpu_per_sandbox)
            .map_err(|e| problems.push(format!("spec.quotas.maxCpuPerSandbox: {e}")));
        let memory = quantity::parse_bytes(&quotas.max_memory_per_sandbox)
            .map_err(|e| problems.push(format!("spec.quotas.maxMemoryPerSandbox: {e}")));
        if quotas.max_storage_gb == 0 {
            problems.push("spec.quotas.maxStorageGb: must be at least 1".into());
        }
        let llm = &spec.llm;
        if llm.provider.trim().is_empty() {
            problems.push("spec.llm.provider: must not be empty".into());
        }
        if llm.model.trim().is_empty() {
            problems.push("spec.llm.model: must not be empty".into());
        }
        if let Err(reason) = names::dns_subdomain(&llm.api_key_secret_ref.name) {
            problems.push(format!("spec.llm.apiKeySecretRef.name: {reason}"));
        }
        if let Err(reason) = names::secret_key(&llm.api_key_secret_ref.key) {
            problems.push(format!("spec.llm.apiKeySecretRef.key: {reason}"));
        }
        if spec.sandbox.image.trim().is_empty() {
            problems.push("spec.sandbox.image: must not be empty".into());
        }
        if !matches!(
            spec.sandbox.pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            problems.push(format!(
                "spec.sandbox.pullPolicy: {:?} must be Always, IfNotPresent or Never",
                spec.sandbox.pull_policy
            ));
        }
        for (i, cidr) in spec.network.allowed_egress_cidrs.iter().enumerate() {
            if let Err(reason) = names::cidr(cidr) {
                problems.push(format!("spec.network.allowedEgressCIDRs[{i}]: {reason}"));
            }
        }
        match (cpu, memory) {
            (Ok(sandbox_cpu_millis), Ok(sandbox_memory_bytes)) if problems.is_empty() => {
                Ok(Tenant {
                    namespace: format!("{NAMESPACE_PREFIX}{name}"),
                    home_namespace: resource.namespace().unwrap_or_else(|| "default".into()),
                    name,
                    max_sessions: quotas.max_sessions,
                    sandbox_cpu_millis,
                    sandbox_memory_bytes,
                    storage_gb: quotas.max_storage_gb,
                    max_sandbox_duration_secs: u64::from(quotas.max_sandbox_duration_minutes) * 60,
                    llm: llm.clone(),
                    sandbox: spec.sandbox.clone(),
                    network: spec.network.clone(),
                })
            }
            _ => Err(Invalid(problems)),
        }
    }
}

fn looks_like_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{CognitionTenantSpec, Quotas, SecretKeyRef};

    pub(crate) fn acme() -> CognitionTenant {
        let mut tenant = CognitionTenant::new(
            "acme",
            CognitionTenantSpec {
                display_name: "Acme Corp".into(),
                admin_email: "admin@acme.com".into(),
                quotas: Quotas {
                    max_sessions: 10,
                    max_cpu_per_sandbox: "2".into(),
                    max_memory_per_sandbox: "4Gi".into(),
                    max_storage_gb: 50,
                    max_sandbox_duration_minutes: 60,
                },
                llm: Llm {
                    provider: "openai".into(),
                    model: "gpt-4o".into(),
                    api_key_secret_ref: SecretKeyRef {
                        name: "acme-llm-keys".into(),
                        key: "OPENAI_API_KEY".into(),
                    },
                },
                sandbox: Sandbox::default(),
                network: Network::default(),
            },
        );
        tenant.metadata.namespace = Some("cognition-system".into());
        tenant
    }

    #[test]
    fn a_valid_spec_is_parsed() {
        let tenant = Tenant::from_resource(&acme()).unwrap();
        assert_eq!(tenant.namespace, "cognition-tenant-acme");
        assert_eq!(tenant.home_namespace, "cognition-system");
        assert_eq!(tenant.sandbox_cpu_millis, 2000);
        assert_eq!(tenant.sandbox_memory_bytes, 4 << 30);
        assert_eq!(tenant.max_sandbox_duration_secs, 3600);
    }

    #[test]
    fn every_problem_is_named_by_field() {
        let mut bad = acme();
        bad.spec.display_name = " ".into();
        bad.spec.admin_email = "nobody".into();
        bad.spec.quotas.max_sessions = 0;
        bad.spec.quotas.max_cpu_per_sandbox = "2 cores".into();
        bad.spec.quotas.max_memory_per_sandbox = "4GB".into();
        bad.spec.quotas.max_storage_gb = 0;
        bad.spec.llm.provider = String::new();
        bad.spec.llm.model = String::new();
        bad.spec.llm.api_key_secret_ref.name = String::new();
        bad.spec.llm.api_key_secret_ref.key = "a/b".into();
        bad.spec.sandbox.image = String::new();
        bad.spec.sandbox.pull_policy = "Sometimes".into();
        bad.spec.network.allowed_egress_cidrs = vec!["10.0.0.0/8".into(), "10.0.0.1".into()];
        let Invalid(problems) = Tenant::from_resource(&bad).unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.displayName",
                "spec.adminEmail",
                "spec.quotas.maxSessions",
                "spec.quotas.maxCpuPerSandbox",
                "spec.quotas.maxMemoryPerSandbox",
                "spec.quotas.maxStorageGb",
                "spec.llm.provider",
                "spec.llm.model",
                "spec.llm.apiKeySecretRef.name",
                "spec.llm.apiKeySecretRef.key",
                "spec.sandbox.image",
                "spec.sandbox.pullPolicy",
                "spec.network.allowedEgressCIDRs[1]",
            ]
        );
    }

    #[test]
    fn names_must_fit_the_tenant_namespace() {
        let mut long = acme();
        long.metadata.name = Some("a".repeat(47));
        let Invalid(problems) = Tenant::from_resource(&long).unwrap_err();
        assert!(
            problems[0].contains("longer than 46 characters"),
            "{problems:?}"
        );
        let mut dotted = acme();
        dotted.metadata.name = Some("acme.corp".into());
        assert!(Tenant::from_resource(&dotted).is_err());
    }

    #[test]
    fn emails() {
        assert!(looks_like_email("admin@acme.com"));
        for bad in [
            "",
            "admin",
            "@acme.com",
            "admin@acme",
            "a b@acme.com",
            "a@b@c.com",
        ] {
            assert!(!looks_like_email(bad), "{bad:?} accepted");
        }
    }
}
