// The job-spec schema: one table row per JobSpec field, with both spellings, type, default and allowed values.
//
// Every key the parser accepts comes from this table (KnownFields) or from the list of LLaMA-Factory keys that
// are accepted and ignored (IgnoredKeys). docs/job-spec.md documents the same table; a test checks that the
// two agree. The parser (parse.cc) and the emitter (emit.cc) are generic over these rows, so adding a field is
// one row here plus one line in docs/job-spec.md.
//
// Thread-safety: the tables are built once (function-local statics) and read-only afterwards.
// Ownership: rows are owned by the static table; callers hold const references.
//
// Example:
//   const Field* f = FindField("learning_rate");           // flat spelling
//   const Field* g = FindField("train.learning_rate");     // nested spelling, the same row
//   std::string fix = SuggestKey("lora_rnak");               // "lora_rank"
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

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
  std::function<Status(const YAML::Node& value, std::string_view key, std::string_view where, JobSpec& spec)>
      assign;
  // The field's value as one YAML node (scalars are strings; lists are sequences; unset optionals are null).
  std::function<YAML::Node(const JobSpec& spec)> get;

  std::string_view section() const;         // "train" for "train.learning_rate", "" for "kind"
  std::string_view leaf() const;            // "learning_rate"
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
  std::string reason;                       // the warning text after "key '<key>' <where> is ignored: "
};
const std::vector<IgnoredKey>& IgnoredKeys();
const IgnoredKey* FindIgnoredKey(std::string_view key);

// The closest known key by edit distance (flat, nested and ignored keys), or "" when nothing is close.
std::string SuggestKey(std::string_view key);

// Renders a YAML node as scalar text for docs and messages ("[a, b]" for a list, "null" for null).
std::string NodeText(const YAML::Node& node);

}  // namespace anneal::jobspec
