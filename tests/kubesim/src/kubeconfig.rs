//! The kubeconfig a sim writes, readable by kubectl and by the kube crate.

use base64::Engine;

/// A kubeconfig with one cluster, user and context, all named `kubesim`,
/// with the bearer token and the CA when given.
pub fn render(url: &str, token: Option<&str>, ca_pem: Option<&str>) -> String {
    let ca = match ca_pem {
        Some(pem) => format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => String::new(),
    };
    let user_block = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\n{ca}contexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\ncurrent-context: kubesim\npreferences: {{}}\nusers:\n- name: kubesim\n{user_block}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_parses_with_the_kube_crate() {
        let text = render(
            "https://127.0.0.1:6443",
            Some("s3cret"),
            Some("-----BEGIN CERTIFICATE-----\n"),
        );
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("kubesim"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert!(cluster.certificate_authority_data.is_some());
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some());
    }

    #[test]
    fn without_token_the_user_is_empty() {
        let text = render("http://127.0.0.1:1", None, None);
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert!(
            kc.auth_infos[0]
                .auth_info
                .as_ref()
                .is_none_or(|a| a.token.is_none())
        );
    }
}
