// The job-spec schema: one table row per JobSpec field, with both spellings, type, default and allowed values.
//
// Every key the parser accepts comes from this table (KnownFields), from the LLaMA-Factory keys translated into a
// field (TranslatedKeys: deepspeed, disable_gradient_checkpointing), or from the LLaMA-Factory keys that are
// accepted and ignored (IgnoredKeys); RefusedKeys are known LLaMA-Factory keys refused with what to use instead.
// docs/job-spec.md documents the same table; a test checks that the two agree. The parser (parse.cc) and the emitter
// (emit.cc) are generic over these rows, so adding a field is one row here plus one line in docs/job-spec.md.
//
// Thread-safety: the tables are built once (function-local statics) and read-only afterwards.
// Ownership: rows are owned by the static table; callers hold const references.
//
// Example:
//   const Field* f = FindField("learning_rate");           // flat spelling
//   const Field* g = FindField("train.learning_rate");     // nested spelling, the same row
//   std::string fix = SuggestKey("lora_rnak");               // "lora_rank"
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::jobspec {

// One field of JobSpec.
struct Field {
  std::string nested;                       // canonical dotted path, e.g. "train.learning_rate"
  std::vector<std::string> nested_aliases;  // other accepted dotted paths, e.g. "resources.parallel.tensor"
  std::string flat;                         // LLaMA-Factory / flat key, empty when the field has none
  std::vector<std::string> flat_aliases;    // deprecated flat names (a warning names the new one)
  std::string type;                         // for docs: integer, number, bool, string, list, enum
  std::string expected;                     // for messages: "a positive integer", "one of lora, full, freeze"
  std::string doc;                          // one-line description (docs/job-spec.md)

  // Converts and checks `value` and stores it. `key` is the key as the user wrote it, `where` is
  // "at job.yaml:7" or "in override 'lora_rank=8'". Errors: INVALID_ARGUMENT
  // "key '<key>' <where>: expected <expected>, got '<value>'".
  std::function<Status(const YAML::Node& value, std::string_view key, std::string_view where, JobSpec& spec)> assign;
  // The field's value as one YAML node (scalars are strings; lists are sequences; unset optionals are null).
  std::function<YAML::Node(const JobSpec& spec)> get;

  std::string_view section() const;  // "train" for "train.learning_rate", "" for "kind"
  std::string_view leaf() const;     // "learning_rate"
};

// All fields, in emission order (kind, model, finetuning, data, train, eval, resources, scheduling).
const std::vector<Field>& KnownFields();
// Builds the table (fields.cc); KnownFields() keeps one copy.
std::vector<Field> BuildFields();

// Sections of the nested spelling ("model", ..., "resources.parallel").
const std::vector<std::string>& Sections();
bool IsSection(std::string_view dotted);

// Looks a key up by its nested path, nested alias, flat name or deprecated flat name; nullptr when unknown.
const Field* FindField(std::string_view key);
// Nested lookups only (inside a section a flat name is not accepted).
const Field* FindNestedField(std::string_view dotted);

// An accepted LLaMA-Factory key that has no effect here, and why.
struct IgnoredKey {
  std::string key;
  std::string reason;  // the warning text after "key '<key>' <where> is ignored: "
};
const std::vector<IgnoredKey>& IgnoredKeys();
const IgnoredKey* FindIgnoredKey(std::string_view key);

// A LLaMA-Factory key that sets a field under another meaning: `deepspeed` (a JSON file whose
// zero_optimization.stage becomes resources.zero_stage) and `disable_gradient_checkpointing` (the inverse of
// train.gradient_checkpointing). It counts as the target field: giving both is the "same setting twice" error.
struct TranslatedKey {
  std::string key;
  std::string target;  // nested path of the field it sets
  // The target field's value for `value`, computed when the spec is applied (after overrides, so an override
  // of the target means the translation never runs). Errors: INVALID_ARGUMENT naming key, where and the file.
  std::function<StatusOr<YAML::Node>(const YAML::Node& value, std::string_view key, std::string_view where)> translate;
};
const std::vector<TranslatedKey>& TranslatedKeys();
const TranslatedKey* FindTranslatedKey(std::string_view key);

// A LLaMA-Factory key for a feature Anneal does not have: an error saying what to use instead, unless the value
// is LLaMA-Factory's default (which changes nothing) or null.
struct RefusedKey {
  std::string key;
  std::string harmless;  // LLaMA-Factory's default, accepted silently ("false", "concat"); "" when only null is
  std::string instead;   // the message after "key '<key>' <where> is not supported: "
};
const std::vector<RefusedKey>& RefusedKeys();
const RefusedKey* FindRefusedKey(std::string_view key);
bool IsHarmlessValue(const RefusedKey& refused, const YAML::Node& value);

// The closest known key by edit distance (flat, nested, translated, refused and ignored keys), or "" when nothing is
// close.
std::string SuggestKey(std::string_view key);

// Renders a YAML node as scalar text for docs and messages ("[a, b]" for a list, "null" for null).
std::string NodeText(const YAML::Node& node);

}  // namespace anneal::jobspec
