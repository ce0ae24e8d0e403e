// Reading, resolving and writing recipes.
//
// A recipe file is YAML. `extends:` (a path or a list of paths, relative to the file) names
// base recipes that are deep-merged first, in order: mappings merge key by key, a scalar or a
// list replaces the base's value. Overrides (`model.n_layer=2`) are applied last, their values
// typed as YAML scalars. Every problem — YAML syntax, unknown key, wrong type, value out of
// range, inconsistent values, missing input — is collected and thrown at once as RecipeError.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/recipe/diagnostic.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::recipe {

/// Loads `path` with its bases, applies `overrides` ("key.path=value") and validates.
/// Throws RecipeError listing every problem.
Recipe load_recipe(const std::filesystem::path& path, const std::vector<std::string>& overrides = {});

/// Same, from YAML text; `name` stands for the file name in messages, and `extends:` paths
/// are relative to `base_dir`.
Recipe parse_recipe(std::string_view yaml, const std::string& name, const std::vector<std::string>& overrides = {},
                    const std::filesystem::path& base_dir = ".");

/// The fully resolved recipe as YAML: every section and key, no `extends:`. Loading the result
/// gives back an equal recipe.
std::string to_yaml(const Recipe& recipe);

/// FNV-1a of to_yaml(recipe): two runs with equal hashes were configured identically (export
/// metadata, the data-parallel ranks' agreement check).
uint64_t recipe_hash(const Recipe& recipe);

/// One row of the key reference.
struct KeyDoc {
  std::string key;      // dotted path
  std::string type;     // "integer >= 1", "one of adamw|sgd", "list of string", ...
  std::string value;    // default, as YAML
  std::string doc;
};

/// Every key a recipe may hold, in declaration order, with its default.
std::vector<KeyDoc> recipe_keys();
/// The same keys with `recipe`'s values (KeyDoc::value, YAML flow text): what a stage records
/// of the recipe it was made from.
std::vector<KeyDoc> recipe_keys(const Recipe& recipe);

}  // namespace lathe::recipe
