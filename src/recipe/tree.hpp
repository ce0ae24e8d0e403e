// A YAML document as a tree that remembers, for every key and value, the file and position it
// came from. Merging trees (extends:, --set) keeps those positions, so a problem found after
// composition is still reported where the user wrote the value.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/recipe/diagnostic.hpp"

namespace lathe::recipe::detail {

struct Node {
  enum class Kind { Null, Scalar, Sequence, Map };
  struct Entry;

  Kind kind = Kind::Null;
  std::string scalar;     // Scalar: the text as written
  bool quoted = false;    // Scalar: written in quotes (a string, never a number or bool)
  std::vector<Node> items;
  std::vector<Entry> entries;  // Map: in file order
  Mark mark;

  const Node* find(std::string_view key) const;
  Node* find(std::string_view key);
  /// Mark of the key `key` in this map (falls back to the map's own mark).
  Mark key_mark(std::string_view key) const;
  void erase(std::string_view key);
  std::string_view kind_name() const;
};

struct Node::Entry {
  std::string key;
  Mark key_mark;
  Node value;
};

/// Parses YAML text into a Node; syntax errors and duplicate keys go to `diags`.
Node parse_yaml(std::string_view text, const std::string& file, int line_offset, int col_offset,
                std::vector<Diagnostic>& diags);

/// Deep merge: maps merge key by key, anything else in `top` replaces `base`.
void merge_into(Node& base, Node top);

/// Loads a recipe file and its `extends:` chain into one tree (without the extends key); every
/// file read is appended to `read`.
Node load_tree(const std::filesystem::path& path, std::vector<Diagnostic>& diags,
               std::vector<std::filesystem::path>& read);
Node load_tree_from_text(std::string_view text, const std::string& name, const std::filesystem::path& base_dir,
                         std::vector<Diagnostic>& diags, std::vector<std::filesystem::path>& read);

/// Applies "a.b.c=value" to the tree.
void apply_override(Node& root, const std::string& assignment, std::vector<Diagnostic>& diags);

}  // namespace lathe::recipe::detail
