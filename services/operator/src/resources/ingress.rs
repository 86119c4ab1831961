//! The tenant's Ingress `tenant-ingress`: `https://<name>.<domain>/` to the server Service, with
//! WebSocket support for ingress-nginx. Only when the operator has a domain configured.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{meta, server};
use crate::config::Config;
use crate::tenant::Tenant;

/// The Ingress's name.
pub const INGRESS_NAME: &str = "tenant-ingress";

/// The tenant's public host name, when the operator has a domain.
pub fn host(tenant: &Tenant, config: &Config) -> Option<String> {
    (!config.domain.is_empty()).then(|| format!("{}.{}", tenant.name, config.domain))
}

/// `tenant-ingress`, or `None` without `COGNITION_OPERATOR_DOMAIN`.
pub fn ingress(tenant: &Tenant, config: &Config) -> Option<Ingress> {
    let host = host(tenant, config)?;
    let mut metadata = meta(tenant, INGRESS_NAME);
    metadata.annotations = Some(BTreeMap::from([(
        "nginx.ingress.kubernetes.io/websocket-services".to_owned(),
        server::NAME.to_owned(),
    )]));
    let tls = (!config.tls_secret.is_empty()).then(|| {
        vec![IngressTLS {
            hosts: Some(vec![host.clone()]),
            secret_name: Some(config.tls_secret.clone()),
        }]
    });
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            tls,
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: server::NAME.into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(server::HTTP_PORT),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}
