//! The OpenAPI schema of [`Stage`], which the store's types carry (a job's attempts, the stage
//! it reached) and `quire serve` answers with as they are. The other types derive
//! `utoipa::ToSchema` where they are defined; `Stage` lives in stage-machine, which depends on
//! nothing beyond serde, strum and thiserror, so its schema is described here, from the same
//! variant list its names are parsed from.

use std::borrow::Cow;

use stage_machine::Stage;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Stands in for [`Stage`] in a schema (`#[schema(value_type = StageSchema)]`): a string, one of
/// the stages' snake_case names, as serde writes them.
pub struct StageSchema;

impl utoipa::PartialSchema for StageSchema {
    fn schema() -> RefOr<Schema> {
        let names = <Stage as strum::VariantArray>::VARIANTS.iter().map(|stage| <&str>::from(*stage));
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some("A stage of a document's processing, in pipeline order; `failed` stands outside it."))
            .into()
    }
}

impl utoipa::ToSchema for StageSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Stage")
    }
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema as _;

    use super::*;

    #[test]
    fn the_stage_schema_names_every_stage_as_serde_writes_it() {
        let schema = serde_json::to_value(StageSchema::schema()).unwrap();
        let written: Vec<serde_json::Value> =
            <Stage as strum::VariantArray>::VARIANTS.iter().map(|stage| serde_json::to_value(stage).unwrap()).collect();
        assert_eq!(schema["enum"], serde_json::Value::Array(written), "{schema}");
        assert_eq!(schema["type"], "string");
    }
}
