//! SCIM schema definitions (RFC 7643): the attributes the server accepts, their types and
//! their mutability, returned and case-exactness rules, and name resolution against them.

use std::fmt;

use serde_json::{Value, json};

/// URN of the core User schema.
pub const USER_SCHEMA_ID: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// URN of the enterprise User extension.
pub const ENTERPRISE_USER_SCHEMA_ID: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// URN of the core Group schema.
pub const GROUP_SCHEMA_ID: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// URN of the schema that describes schema representations.
pub const SCHEMA_SCHEMA_ID: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// URN of the schema that describes resource type representations.
pub const RESOURCE_TYPE_SCHEMA_ID: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

/// The data type of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// Who may write an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// When an attribute appears in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// How unique values of an attribute must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// One attribute definition, possibly with sub-attributes.
#[derive(Debug)]
pub struct AttributeDef {
    pub name: &'static str,
    pub kind: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [AttributeDef],
    pub description: &'static str,
}

/// A schema: a URN and its attributes.
#[derive(Debug)]
pub struct SchemaDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttributeDef],
}

/// A resource type: its core schema and the extensions it accepts.
#[derive(Debug)]
pub struct ResourceSchema {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub core: &'static SchemaDef,
    pub extensions: &'static [&'static SchemaDef],
}

/// An attribute reference as written in filters, PATCH paths and `attributes` parameters:
/// an optional schema URN, an attribute name and an optional sub-attribute name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub schema: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

/// An attribute path resolved against a resource schema, with canonical names.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedAttr {
    /// `None` for the core schema, the extension URN otherwise (the key that holds the
    /// extension's attributes in a resource).
    pub extension: Option<&'static str>,
    pub attr: &'static AttributeDef,
    pub sub: Option<&'static AttributeDef>,
}

impl ResolvedAttr {
    /// The definition that the path names: the sub-attribute when there is one.
    pub fn target(&self) -> &'static AttributeDef {
        self.sub.unwrap_or(self.attr)
    }
}

impl AttributeDef {
    /// The sub-attribute with this name, compared without regard to case.
    pub fn find_sub(&self, name: &str) -> Option<&'static AttributeDef> {
        find_attr(self.sub_attributes, name)
    }
}

/// The attribute with this name in a list of definitions, compared without regard to case.
fn find_attr(attrs: &'static [AttributeDef], name: &str) -> Option<&'static AttributeDef> {
    attrs
        .iter()
        .find(|attr| attr.name.eq_ignore_ascii_case(name))
}

impl AttrPath {
    /// Parses `attr`, `attr.sub` or `urn:...:attr[.sub]`.
    ///
    /// A schema URN runs up to the last `:`, so the dots and colons inside a URN such as
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User` never split the name.
    /// A bare schema URN parses as a path whose attribute is the URN's last segment; callers
    /// that accept one check [`ResourceSchema::is_extension_urn`] first. Returns `None` for
    /// anything that is not an attribute path (empty parts, spaces, brackets, extra dots).
    pub fn parse(s: &str) -> Option<AttrPath> {
        let (schema, rest) = match s.get(..4) {
            Some(prefix) if prefix.eq_ignore_ascii_case("urn:") => {
                let colon = s.rfind(':')?;
                (Some(&s[..colon]), &s[colon + 1..])
            }
            _ => (None, s),
        };
        if let Some(urn) = schema {
            if urn.len() <= 4 || !urn.chars().all(is_urn_char) {
                return None;
            }
        }
        let (attr, sub) = match rest.split_once('.') {
            Some((attr, sub)) => (attr, Some(sub)),
            None => (rest, None),
        };
        if !is_attr_name(attr) || !sub.is_none_or(is_attr_name) {
            return None;
        }
        Some(AttrPath {
            schema: schema.map(str::to_owned),
            attr: attr.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }

    /// A path to an attribute without a schema URN or sub-attribute.
    pub fn new(attr: impl Into<String>) -> Self {
        Self {
            schema: None,
            attr: attr.into(),
            sub: None,
        }
    }
}

/// Whether `name` is an RFC 7643 `ATTRNAME` (or `$ref`).
pub(crate) fn is_attr_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }
        Some('$') => name.eq_ignore_ascii_case("$ref"),
        _ => false,
    }
}

/// Whether `c` may appear in a schema URN inside an attribute path.
fn is_urn_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '+' | '%')
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl ResourceSchema {
    /// Resolves a path to canonical definitions, comparing names without regard to case.
    ///
    /// A path qualified by the core URN resolves in the core schema and the common
    /// attributes; one qualified by an extension URN resolves in that extension. An
    /// unqualified name is looked up in the core schema, then the common attributes, then
    /// the extensions, because clients send `employeeNumber` without its URN. Returns
    /// `None` for unknown names and for a sub-attribute of a non-complex attribute.
    pub fn resolve(&self, path: &AttrPath) -> Option<ResolvedAttr> {
        let (extension, attr) = match &path.schema {
            Some(urn) if urn.eq_ignore_ascii_case(self.core.id) => {
                (None, self.find_core(&path.attr)?)
            }
            Some(urn) => {
                let ext = self.find_extension(urn)?;
                (Some(ext.id), find_attr(ext.attributes, &path.attr)?)
            }
            None => match self.find_core(&path.attr) {
                Some(attr) => (None, attr),
                None => self.extensions.iter().find_map(|ext| {
                    find_attr(ext.attributes, &path.attr).map(|attr| (Some(ext.id), attr))
                })?,
            },
        };
        let sub = match &path.sub {
            Some(name) => Some(attr.find_sub(name)?),
            None => None,
        };
        Some(ResolvedAttr {
            extension,
            attr,
            sub,
        })
    }

    /// An attribute of the core schema or a common attribute.
    fn find_core(&self, name: &str) -> Option<&'static AttributeDef> {
        find_attr(self.core.attributes, name).or_else(|| find_attr(COMMON_ATTRIBUTES, name))
    }

    /// The URNs a resource of this type lists in `schemas`: the core schema first.
    pub fn schema_ids(&self) -> Vec<&'static str> {
        std::iter::once(self.core.id)
            .chain(self.extensions.iter().map(|ext| ext.id))
            .collect()
    }

    /// The extension with this URN, compared without regard to case.
    pub fn find_extension(&self, urn: &str) -> Option<&'static SchemaDef> {
        self.extensions
            .iter()
            .copied()
            .find(|ext| ext.id.eq_ignore_ascii_case(urn))
    }

    /// The extension when `s` is a whole extension URN rather than an attribute path, as in
    /// a PATCH path or a pathless value key that names the whole extension object.
    pub fn is_extension_urn(&self, s: &str) -> Option<&'static SchemaDef> {
        self.find_extension(s)
    }
}

/// A schema in the RFC 7643 §7 representation served under `/Schemas`.
pub fn schema_to_json(def: &SchemaDef, base_url: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA_ID],
        "id": def.id,
        "name": def.name,
        "description": def.description,
        "attributes": def.attributes.iter().map(attribute_to_json).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Schema",
            "location": format!("{}/Schemas/{}", base_url.trim_end_matches('/'), def.id),
        },
    })
}

/// One attribute definition in the RFC 7643 §7 representation.
fn attribute_to_json(attr: &AttributeDef) -> Value {
    let mut out = json!({
        "name": attr.name,
        "type": attr.kind.as_str(),
        "multiValued": attr.multi_valued,
        "description": attr.description,
        "required": attr.required,
        "caseExact": attr.case_exact,
        "mutability": attr.mutability.as_str(),
        "returned": attr.returned.as_str(),
        "uniqueness": attr.uniqueness.as_str(),
    });
    if !attr.canonical_values.is_empty() {
        out["canonicalValues"] = json!(attr.canonical_values);
    }
    if attr.kind == AttrType::Reference {
        out["referenceTypes"] = json!(attr.reference_types);
    }
    if attr.kind == AttrType::Complex {
        let subs: Vec<Value> = attr.sub_attributes.iter().map(attribute_to_json).collect();
        out["subAttributes"] = json!(subs);
    }
    out
}

/// A resource type in the RFC 7643 §6 representation served under `/ResourceTypes`.
pub fn resource_type_to_json(rt: &ResourceSchema, base_url: &str) -> Value {
    let extensions: Vec<Value> = rt
        .extensions
        .iter()
        .map(|ext| json!({ "schema": ext.id, "required": false }))
        .collect();
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA_ID],
        "id": rt.name,
        "name": rt.name,
        "endpoint": rt.endpoint,
        "description": rt.core.description,
        "schema": rt.core.id,
        "schemaExtensions": extensions,
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{}/ResourceTypes/{}", base_url.trim_end_matches('/'), rt.name),
        },
    })
}

impl AttrType {
    /// The type name used in schema representations.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

impl Mutability {
    /// The keyword used in schema representations.
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

impl Returned {
    /// The keyword used in schema representations.
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

impl Uniqueness {
    /// The keyword used in schema representations.
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// A read-write, single-valued, case-insensitive attribute returned by default; the
/// definitions below override what differs.
const fn attr(name: &'static str, kind: AttrType, description: &'static str) -> AttributeDef {
    AttributeDef {
        name,
        kind,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
        description,
    }
}

/// A string attribute with the defaults of [`attr`].
const fn string(name: &'static str, description: &'static str) -> AttributeDef {
    attr(name, AttrType::String, description)
}

/// The `display` sub-attribute shared by multi-valued attributes.
const DISPLAY: AttributeDef = string(
    "display",
    "A human-readable name, primarily used for display purposes.",
);

/// The `primary` sub-attribute shared by multi-valued attributes.
const PRIMARY: AttributeDef = attr(
    "primary",
    AttrType::Boolean,
    "A Boolean value indicating the 'primary' or preferred attribute value.",
);

/// A multi-valued complex attribute of `value`, `display`, `type` and `primary`.
const fn multi_valued(
    name: &'static str,
    description: &'static str,
    sub_attributes: &'static [AttributeDef],
) -> AttributeDef {
    AttributeDef {
        multi_valued: true,
        sub_attributes,
        ..attr(name, AttrType::Complex, description)
    }
}

/// The `type` sub-attribute with the given canonical values.
const fn type_sub(canonical_values: &'static [&'static str]) -> AttributeDef {
    AttributeDef {
        canonical_values,
        ..string("type", "A label indicating the attribute's function.")
    }
}

/// The attributes every resource has (RFC 7643 §3.1).
pub static COMMON_ATTRIBUTES: &[AttributeDef] = &[
    AttributeDef {
        case_exact: true,
        mutability: Mutability::ReadOnly,
        returned: Returned::Always,
        uniqueness: Uniqueness::Server,
        ..string(
            "id",
            "A unique identifier for the resource, assigned by the service provider.",
        )
    },
    AttributeDef {
        case_exact: true,
        ..string(
            "externalId",
            "An identifier for the resource as defined by the provisioning client.",
        )
    },
    AttributeDef {
        mutability: Mutability::ReadOnly,
        sub_attributes: &[
            AttributeDef {
                case_exact: true,
                mutability: Mutability::ReadOnly,
                ..string(
                    "resourceType",
                    "The name of the resource type of the resource.",
                )
            },
            AttributeDef {
                mutability: Mutability::ReadOnly,
                ..attr(
                    "created",
                    AttrType::DateTime,
                    "The time the resource was added.",
                )
            },
            AttributeDef {
                mutability: Mutability::ReadOnly,
                ..attr(
                    "lastModified",
                    AttrType::DateTime,
                    "The time the resource was last updated.",
                )
            },
            AttributeDef {
                case_exact: true,
                mutability: Mutability::ReadOnly,
                reference_types: &["uri"],
                ..attr("location", AttrType::Reference, "The URI of the resource.")
            },
            AttributeDef {
                case_exact: true,
                mutability: Mutability::ReadOnly,
                ..string("version", "The version of the resource, as an entity tag.")
            },
        ],
        ..attr(
            "meta",
            AttrType::Complex,
            "Resource metadata maintained by the service provider.",
        )
    },
];

/// The core User schema (RFC 7643 §4.1).
pub static USER_CORE: SchemaDef = SchemaDef {
    id: USER_SCHEMA_ID,
    name: "User",
    description: "User Account",
    attributes: &[
        AttributeDef {
            required: true,
            uniqueness: Uniqueness::Server,
            ..string(
                "userName",
                "Unique identifier for the User, used by the user to authenticate.",
            )
        },
        AttributeDef {
            sub_attributes: &[
                string("formatted", "The full name, formatted for display."),
                string("familyName", "The family name of the User."),
                string("givenName", "The given name of the User."),
                string("middleName", "The middle name(s) of the User."),
                string("honorificPrefix", "The honorific prefix(es) of the User."),
                string("honorificSuffix", "The honorific suffix(es) of the User."),
            ],
            ..attr(
                "name",
                AttrType::Complex,
                "The components of the user's real name.",
            )
        },
        string(
            "displayName",
            "The name of the User, suitable for display to end-users.",
        ),
        string(
            "nickName",
            "The casual way to address the user in real life.",
        ),
        AttributeDef {
            reference_types: &["external"],
            ..attr(
                "profileUrl",
                AttrType::Reference,
                "A fully qualified URL pointing to a page representing the User's online profile.",
            )
        },
        string("title", "The user's title, such as \"Vice President\"."),
        string(
            "userType",
            "Identifies the relationship between the organization and the user.",
        ),
        string(
            "preferredLanguage",
            "The User's preferred written or spoken language.",
        ),
        string(
            "locale",
            "The User's default location for localizing items.",
        ),
        string(
            "timezone",
            "The User's time zone in the 'Olson' time zone database format.",
        ),
        attr(
            "active",
            AttrType::Boolean,
            "The User's administrative status.",
        ),
        AttributeDef {
            mutability: Mutability::WriteOnly,
            returned: Returned::Never,
            ..string("password", "The User's cleartext password, never returned.")
        },
        multi_valued(
            "emails",
            "Email addresses for the user.",
            &[
                string("value", "Email address for the user."),
                DISPLAY,
                type_sub(&["work", "home", "other"]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "phoneNumbers",
            "Phone numbers for the User.",
            &[
                string("value", "Phone number of the User."),
                DISPLAY,
                type_sub(&["work", "home", "mobile", "fax", "pager", "other"]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "ims",
            "Instant messaging addresses for the User.",
            &[
                string("value", "Instant messaging address for the User."),
                DISPLAY,
                type_sub(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "photos",
            "URLs of photos of the User.",
            &[
                AttributeDef {
                    reference_types: &["external"],
                    ..attr("value", AttrType::Reference, "URL of a photo of the User.")
                },
                DISPLAY,
                type_sub(&["photo", "thumbnail"]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "addresses",
            "A physical mailing address for this User.",
            &[
                string(
                    "formatted",
                    "The full mailing address, formatted for display.",
                ),
                string("streetAddress", "The full street address component."),
                string("locality", "The city or locality component."),
                string("region", "The state or region component."),
                string("postalCode", "The zip code or postal code component."),
                string("country", "The country name component."),
                type_sub(&["work", "home", "other"]),
                PRIMARY,
            ],
        ),
        AttributeDef {
            mutability: Mutability::ReadOnly,
            ..multi_valued(
                "groups",
                "A list of groups to which the user belongs, maintained by the service provider.",
                &[
                    AttributeDef {
                        case_exact: true,
                        mutability: Mutability::ReadOnly,
                        ..string("value", "The identifier of the User's group.")
                    },
                    AttributeDef {
                        mutability: Mutability::ReadOnly,
                        reference_types: &["User", "Group"],
                        ..attr(
                            "$ref",
                            AttrType::Reference,
                            "The URI of the corresponding 'Group' resource.",
                        )
                    },
                    AttributeDef {
                        mutability: Mutability::ReadOnly,
                        ..DISPLAY
                    },
                    AttributeDef {
                        mutability: Mutability::ReadOnly,
                        ..type_sub(&["direct", "indirect"])
                    },
                ],
            )
        },
        multi_valued(
            "entitlements",
            "A list of entitlements for the User.",
            &[
                string("value", "The value of an entitlement."),
                DISPLAY,
                type_sub(&[]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "roles",
            "A list of roles for the User.",
            &[
                string("value", "The value of a role."),
                DISPLAY,
                type_sub(&[]),
                PRIMARY,
            ],
        ),
        multi_valued(
            "x509Certificates",
            "A list of certificates issued to the User.",
            &[
                AttributeDef {
                    case_exact: true,
                    ..attr(
                        "value",
                        AttrType::Binary,
                        "The value of an X.509 certificate.",
                    )
                },
                DISPLAY,
                type_sub(&[]),
                PRIMARY,
            ],
        ),
    ],
};

/// The enterprise User extension (RFC 7643 §4.3).
pub static ENTERPRISE_USER: SchemaDef = SchemaDef {
    id: ENTERPRISE_USER_SCHEMA_ID,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        string(
            "employeeNumber",
            "Numeric or alphanumeric identifier assigned to a person.",
        ),
        string("costCenter", "Identifies the name of a cost center."),
        string("organization", "Identifies the name of an organization."),
        string("division", "Identifies the name of a division."),
        string("department", "Identifies the name of a department."),
        AttributeDef {
            sub_attributes: &[
                AttributeDef {
                    case_exact: true,
                    ..string(
                        "value",
                        "The id of the SCIM resource representing the User's manager.",
                    )
                },
                AttributeDef {
                    reference_types: &["User"],
                    ..attr(
                        "$ref",
                        AttrType::Reference,
                        "The URI of the SCIM resource representing the User's manager.",
                    )
                },
                AttributeDef {
                    mutability: Mutability::ReadOnly,
                    ..string("displayName", "The displayName of the User's manager.")
                },
            ],
            ..attr("manager", AttrType::Complex, "The User's manager.")
        },
    ],
};

/// The core Group schema (RFC 7643 §4.2).
pub static GROUP_CORE: SchemaDef = SchemaDef {
    id: GROUP_SCHEMA_ID,
    name: "Group",
    description: "Group",
    attributes: &[
        AttributeDef {
            required: true,
            uniqueness: Uniqueness::Server,
            ..string("displayName", "A human-readable name for the Group.")
        },
        // Each member element is added and removed whole, so none of its parts change in place.
        multi_valued(
            "members",
            "A list of members of the Group.",
            &[
                AttributeDef {
                    case_exact: true,
                    mutability: Mutability::Immutable,
                    ..string("value", "Identifier of the member of this Group.")
                },
                AttributeDef {
                    mutability: Mutability::Immutable,
                    reference_types: &["User", "Group"],
                    ..attr(
                        "$ref",
                        AttrType::Reference,
                        "The URI of the corresponding member resource.",
                    )
                },
                AttributeDef {
                    mutability: Mutability::Immutable,
                    ..DISPLAY
                },
                AttributeDef {
                    mutability: Mutability::Immutable,
                    ..type_sub(&["User", "Group"])
                },
            ],
        ),
    ],
};

/// The User resource type.
pub static USER: ResourceSchema = ResourceSchema {
    name: "User",
    endpoint: "/Users",
    core: &USER_CORE,
    extensions: &[&ENTERPRISE_USER],
};

/// The Group resource type.
pub static GROUP: ResourceSchema = ResourceSchema {
    name: "Group",
    endpoint: "/Groups",
    core: &GROUP_CORE,
    extensions: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> AttrPath {
        AttrPath::parse(s).expect("test paths are valid")
    }

    /// The canonical names a path resolves to: extension, attribute, sub-attribute.
    fn resolved_names(
        rt: &ResourceSchema,
        s: &str,
    ) -> Option<(Option<&'static str>, &'static str, Option<&'static str>)> {
        rt.resolve(&path(s))
            .map(|r| (r.extension, r.attr.name, r.sub.map(|sub| sub.name)))
    }

    #[test]
    fn parse_splits_plain_and_dotted_names() {
        assert_eq!(
            AttrPath::parse("userName"),
            Some(AttrPath {
                schema: None,
                attr: "userName".into(),
                sub: None
            })
        );
        assert_eq!(
            AttrPath::parse("name.givenName"),
            Some(AttrPath {
                schema: None,
                attr: "name".into(),
                sub: Some("givenName".into())
            })
        );
    }

    #[test]
    fn parse_keeps_dots_and_colons_inside_the_urn() {
        assert_eq!(
            AttrPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName"),
            Some(AttrPath {
                schema: Some(USER_SCHEMA_ID.into()),
                attr: "name".into(),
                sub: Some("givenName".into()),
            })
        );
        assert_eq!(
            AttrPath::parse(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"
            ),
            Some(AttrPath {
                schema: Some(ENTERPRISE_USER_SCHEMA_ID.into()),
                attr: "manager".into(),
                sub: Some("value".into()),
            })
        );
    }

    #[test]
    fn parse_rejects_what_is_not_a_path() {
        for bad in [
            "",
            "a.b.c",
            "user name",
            ".x",
            "x.",
            "urn:",
            "urn:x",
            "emails[type",
            "1abc",
        ] {
            assert_eq!(AttrPath::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn display_prints_what_parse_reads() {
        for s in [
            "userName",
            "name.givenName",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            "members.$ref",
        ] {
            assert_eq!(path(s).to_string(), s);
        }
    }

    #[test]
    fn resolve_ignores_case_and_returns_canonical_names() {
        assert_eq!(
            resolved_names(&USER, "UserName"),
            Some((None, "userName", None))
        );
        assert_eq!(
            resolved_names(&USER, "NAME.GIVENNAME"),
            Some((None, "name", Some("givenName")))
        );
        assert_eq!(
            resolved_names(&USER, "active"),
            Some((None, "active", None))
        );
    }

    #[test]
    fn resolve_accepts_the_core_urn_in_any_case() {
        assert_eq!(
            resolved_names(
                &USER,
                "urn:ietf:params:scim:schemas:core:2.0:user:emails.VALUE"
            ),
            Some((None, "emails", Some("value")))
        );
        assert_eq!(
            resolved_names(
                &GROUP,
                "urn:ietf:params:scim:schemas:core:2.0:Group:members"
            ),
            Some((None, "members", None))
        );
    }

    #[test]
    fn resolve_finds_enterprise_attributes_qualified_or_not() {
        let expected = Some((Some(ENTERPRISE_USER_SCHEMA_ID), "employeeNumber", None));
        assert_eq!(
            resolved_names(
                &USER,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
            ),
            expected
        );
        assert_eq!(resolved_names(&USER, "employeenumber"), expected);
        assert_eq!(
            resolved_names(
                &USER,
                "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:manager.value"
            ),
            Some((Some(ENTERPRISE_USER_SCHEMA_ID), "manager", Some("value")))
        );
    }

    #[test]
    fn resolve_finds_common_attributes() {
        assert_eq!(resolved_names(&GROUP, "id"), Some((None, "id", None)));
        assert_eq!(
            resolved_names(&USER, "externalid"),
            Some((None, "externalId", None))
        );
        assert_eq!(
            resolved_names(&USER, "meta.lastModified"),
            Some((None, "meta", Some("lastModified")))
        );
    }

    #[test]
    fn resolve_rejects_unknown_names_and_foreign_schemas() {
        assert_eq!(resolved_names(&USER, "shoeSize"), None);
        assert_eq!(resolved_names(&USER, "name.nickname"), None);
        assert_eq!(resolved_names(&USER, "userName.value"), None);
        assert_eq!(resolved_names(&GROUP, "employeeNumber"), None);
        assert_eq!(
            resolved_names(&GROUP, "urn:ietf:params:scim:schemas:core:2.0:User:title"),
            None
        );
    }

    #[test]
    fn extension_urns_are_recognised_whole() {
        assert_eq!(
            USER.is_extension_urn("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user")
                .map(|ext| ext.id),
            Some(ENTERPRISE_USER_SCHEMA_ID)
        );
        assert!(USER.is_extension_urn(USER_SCHEMA_ID).is_none());
        assert_eq!(
            USER.schema_ids(),
            vec![USER_SCHEMA_ID, ENTERPRISE_USER_SCHEMA_ID]
        );
        assert_eq!(GROUP.schema_ids(), vec![GROUP_SCHEMA_ID]);
    }

    #[test]
    fn user_core_declares_the_rfc_rules_for_key_attributes() {
        let user_name = USER
            .resolve(&path("userName"))
            .expect("userName exists")
            .attr;
        assert!(user_name.required && !user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let password = USER
            .resolve(&path("password"))
            .expect("password exists")
            .attr;
        assert_eq!(
            (password.mutability, password.returned),
            (Mutability::WriteOnly, Returned::Never)
        );
        let id = USER.resolve(&path("id")).expect("id exists").attr;
        assert_eq!(
            (id.mutability, id.returned, id.case_exact),
            (Mutability::ReadOnly, Returned::Always, true)
        );
        let names: Vec<&str> = USER_CORE.attributes.iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "userName",
                "name",
                "displayName",
                "nickName",
                "profileUrl",
                "title",
                "userType",
                "preferredLanguage",
                "locale",
                "timezone",
                "active",
                "password",
                "emails",
                "phoneNumbers",
                "ims",
                "photos",
                "addresses",
                "groups",
                "entitlements",
                "roles",
                "x509Certificates",
            ]
        );
    }

    #[test]
    fn schema_json_has_the_rfc_shape() {
        let json = schema_to_json(&GROUP_CORE, "https://scim.example.com/scim/v2/");
        assert_eq!(
            json,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
                "id": "urn:ietf:params:scim:schemas:core:2.0:Group",
                "name": "Group",
                "description": "Group",
                "attributes": [
                    {
                        "name": "displayName",
                        "type": "string",
                        "multiValued": false,
                        "description": "A human-readable name for the Group.",
                        "required": true,
                        "caseExact": false,
                        "mutability": "readWrite",
                        "returned": "default",
                        "uniqueness": "server",
                    },
                    {
                        "name": "members",
                        "type": "complex",
                        "multiValued": true,
                        "description": "A list of members of the Group.",
                        "required": false,
                        "caseExact": false,
                        "mutability": "readWrite",
                        "returned": "default",
                        "uniqueness": "none",
                        "subAttributes": [
                            {
                                "name": "value",
                                "type": "string",
                                "multiValued": false,
                                "description": "Identifier of the member of this Group.",
                                "required": false,
                                "caseExact": true,
                                "mutability": "immutable",
                                "returned": "default",
                                "uniqueness": "none",
                            },
                            {
                                "name": "$ref",
                                "type": "reference",
                                "multiValued": false,
                                "description": "The URI of the corresponding member resource.",
                                "required": false,
                                "caseExact": false,
                                "mutability": "immutable",
                                "returned": "default",
                                "uniqueness": "none",
                                "referenceTypes": ["User", "Group"],
                            },
                            {
                                "name": "display",
                                "type": "string",
                                "multiValued": false,
                                "description": "A human-readable name, primarily used for display purposes.",
                                "required": false,
                                "caseExact": false,
                                "mutability": "immutable",
                                "returned": "default",
                                "uniqueness": "none",
                            },
                            {
                                "name": "type",
                                "type": "string",
                                "multiValued": false,
                                "description": "A label indicating the attribute's function.",
                                "required": false,
                                "caseExact": false,
                                "mutability": "immutable",
                                "returned": "default",
                                "uniqueness": "none",
                                "canonicalValues": ["User", "Group"],
                            },
                        ],
                    },
                ],
                "meta": {
                    "resourceType": "Schema",
                    "location": "https://scim.example.com/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
                },
            })
        );
    }

    #[test]
    fn resource_type_json_lists_extensions_as_optional() {
        assert_eq!(
            resource_type_to_json(&USER, "https://scim.example.com/scim/v2"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": "User",
                "name": "User",
                "endpoint": "/Users",
                "description": "User Account",
                "schema": "urn:ietf:params:scim:schemas:core:2.0:User",
                "schemaExtensions": [
                    {
                        "schema": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                        "required": false,
                    },
                ],
                "meta": {
                    "resourceType": "ResourceType",
                    "location": "https://scim.example.com/scim/v2/ResourceTypes/User",
                },
            })
        );
    }
}
