//! Email templates (text and HTML files under `templates/`, rendered with minijinja). The files
//! are compiled into the binary so a deployment cannot lose them; HTML is auto-escaped.

use minijinja::Environment;
use serde::Serialize;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
#[error("template {name} failed to render: {source}")]
pub struct TemplateError {
    name: String,
    source: minijinja::Error,
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Only HTML files are escaped; the text versions stay readable.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        for (name, source) in TEMPLATES {
            // The templates are ours and checked by the tests; a broken one is caught there.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(name, %error, "template does not parse");
            }
        }
        env
    })
}

const TEMPLATES: [(&str, &str); 2] = [
    (
        "dead_letter_alert.txt",
        include_str!("../templates/dead_letter_alert.txt"),
    ),
    (
        "dead_letter_alert.html",
        include_str!("../templates/dead_letter_alert.html"),
    ),
];

/// Renders `<name>.txt` and `<name>.html` with the same context.
pub fn render_pair(
    name: &str,
    context: &impl Serialize,
) -> Result<(String, String), TemplateError> {
    let render = |file: String| {
        environment()
            .get_template(&file)
            .and_then(|t| t.render(minijinja::value::Serde(context)))
            .map_err(|source| TemplateError {
                name: file.clone(),
                source,
            })
    };
    Ok((
        render(format!("{name}.txt"))?,
        render(format!("{name}.html"))?,
    ))
}
