#include "tree.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace lathe::recipe::detail {
namespace fs = std::filesystem;

const Node* Node::find(std::string_view key) const {
  for (const auto& e : entries)
    if (e.key == key) return &e.value;
  return nullptr;
}

Node* Node::find(std::string_view key) {
  return const_cast<Node*>(std::as_const(*this).find(key));
}

Mark Node::key_mark(std::string_view key) const {
  for (const auto& e : entries)
    if (e.key == key) return e.key_mark;
  return mark;
}

void Node::erase(std::string_view key) {
  std::erase_if(entries, [&](const Entry& e) { return e.key == key; });
}

std::string_view Node::kind_name() const {
  switch (kind) {
    case Kind::Null: return "nothing (null)";
    case Kind::Scalar: return "a scalar";
    case Kind::Sequence: return "a list";
    case Kind::Map: return "a mapping";
  }
  return "?";
}

namespace {

Mark to_mark(const YAML::Mark& m, const std::string& file, int line_offset, int col_offset, const Mark& fallback) {
  if (m.is_null() || m.line < 0) return fallback;
  // Offsets shift positions of text embedded in something larger (an override argument).
  return Mark{file, m.line + 1 + line_offset, m.column + 1 + (m.line == 0 ? col_offset : 0)};
}

Node convert(const YAML::Node& y, const std::string& file, int lo, int co, const Mark& fallback,
             std::vector<Diagnostic>& diags, const std::string& path) {
  Node n;
  n.mark = to_mark(y.Mark(), file, lo, co, fallback);
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.scalar = y.Scalar();
      // yaml-cpp tags plain scalars "?" and quoted ones "!"; an explicit !!str counts as quoted.
      n.quoted = y.Tag() == "!" || y.Tag() == "tag:yaml.org,2002:str";
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::Sequence;
      for (std::size_t i = 0; i < y.size(); ++i)
        n.items.push_back(convert(y[i], file, lo, co, n.mark, diags, path + "[" + std::to_string(i) + "]"));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (auto it = y.begin(); it != y.end(); ++it) {
        Mark km = to_mark(it->first.Mark(), file, lo, co, n.mark);
        if (!it->first.IsScalar()) {
          diags.push_back({km, path, "keys must be plain names, not lists or mappings"});
          continue;
        }
        std::string key = it->first.Scalar();
        std::string child = path.empty() ? key : path + "." + key;
        if (n.find(key)) {
          Mark first = n.key_mark(key);
          diags.push_back({km, child, "duplicate key (first given at line " + std::to_string(first.line) + ")"});
          continue;
        }
        n.entries.push_back({key, km, convert(it->second, file, lo, co, km, diags, child)});
      }
      break;
  }
  return n;
}

std::string join_chain(const std::vector<fs::path>& stack, const fs::path& last) {
  std::string out;
  for (const auto& p : stack) out += p.filename().string() + " -> ";
  return out + last.filename().string();
}

Node compose(std::string_view text, const std::string& name, const fs::path& dir, std::vector<fs::path>& stack,
             std::vector<Diagnostic>& diags, std::vector<fs::path>& read);

Node load_file(const fs::path& path, const std::string& name, std::vector<fs::path>& stack,
               std::vector<Diagnostic>& diags, const Mark* from, std::vector<fs::path>& read) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) {
    std::string why = fs::is_directory(path) ? "is a directory" : std::strerror(errno);
    if (from)
      diags.push_back({*from, "extends", "cannot read base recipe '" + name + "': " + why});
    else
      diags.push_back({Mark{name, 0, 0}, "", "cannot read recipe: " + why, /*fatal=*/true});
    Node empty;
    empty.kind = Node::Kind::Map;
    return empty;
  }
  std::ostringstream text;
  text << in.rdbuf();
  read.push_back(path);
  return compose(text.str(), name, path.parent_path(), stack, diags, read);
}

Node compose(std::string_view text, const std::string& name, const fs::path& dir, std::vector<fs::path>& stack,
             std::vector<Diagnostic>& diags, std::vector<fs::path>& read) {
  Node result;
  result.kind = Node::Kind::Map;
  result.mark = Mark{name, 1, 1};

  Node doc = parse_yaml(text, name, 0, 0, diags);
  if (doc.kind == Node::Kind::Null) return result;  // an empty file is an empty recipe
  if (doc.kind != Node::Kind::Map) {
    diags.push_back({doc.mark, "", "a recipe is a mapping of sections (run:, model:, ...), got " +
                                       std::string(doc.kind_name()), /*fatal=*/true});
    return result;
  }

  if (const Node* ext = doc.find("extends")) {
    std::vector<const Node*> bases;
    if (ext->kind == Node::Kind::Scalar) {
      bases.push_back(ext);
    } else if (ext->kind == Node::Kind::Sequence) {
      for (const auto& item : ext->items) bases.push_back(&item);
    } else {
      diags.push_back({ext->mark, "extends", "expected a file name or a list of file names, got " +
                                                 std::string(ext->kind_name())});
    }
    for (const Node* b : bases) {
      if (b->kind != Node::Kind::Scalar || b->scalar.empty()) {
        diags.push_back({b->mark, "extends", "expected a file name, got " + std::string(b->kind_name())});
        continue;
      }
      fs::path base_path = (dir / b->scalar).lexically_normal();
      fs::path canonical = fs::weakly_canonical(base_path);
      if (std::find(stack.begin(), stack.end(), canonical) != stack.end()) {
        diags.push_back({b->mark, "extends", "extends cycle: " + join_chain(stack, canonical), /*fatal=*/true});
        continue;
      }
      stack.push_back(canonical);
      Node base = load_file(base_path, base_path.string(), stack, diags, &b->mark, read);
      stack.pop_back();
      merge_into(result, std::move(base));
    }
    doc.erase("extends");
  }
  merge_into(result, std::move(doc));
  result.mark = Mark{name, 1, 1};
  return result;
}

}  // namespace

namespace {
std::string multi_document_message(std::size_t n) {
  return "the file holds " + std::to_string(n) +
         " YAML documents (separated by ---); a recipe is one document: merge them, or use extends:";
}
}  // namespace

Node parse_yaml(std::string_view text, const std::string& file, int line_offset, int col_offset,
                std::vector<Diagnostic>& diags) {
  Mark start{file, 1 + line_offset, 1 + col_offset};
  try {
    const auto docs = YAML::LoadAll(std::string(text));
    if (docs.size() > 1) {
      // A second document would otherwise be ignored without a word.
      diags.push_back({to_mark(docs[1].Mark(), file, line_offset, col_offset, start), "",
                       multi_document_message(docs.size())});
    }
    YAML::Node y = docs.empty() ? YAML::Node() : docs.front();
    return convert(y, file, line_offset, col_offset, start, diags, "");
  } catch (const YAML::Exception& e) {
    Mark m = to_mark(e.mark, file, line_offset, col_offset, start);
    diags.push_back({m, "", "YAML syntax error: " + e.msg, /*fatal=*/true});
    Node n;
    n.mark = start;
    return n;
  }
}

void merge_into(Node& base, Node top) {
  // `model:` with nothing under it (or only comments) is an empty section: it keeps the base's.
  if (base.kind == Node::Kind::Map && top.kind == Node::Kind::Null) return;
  if (base.kind == Node::Kind::Map && top.kind == Node::Kind::Map) {
    for (auto& e : top.entries) {
      if (Node* existing = base.find(e.key)) {
        merge_into(*existing, std::move(e.value));
        for (auto& be : base.entries)
          if (be.key == e.key) be.key_mark = e.key_mark;
      } else {
        base.entries.push_back(std::move(e));
      }
    }
    return;
  }
  base = std::move(top);
}

Node load_tree(const fs::path& path, std::vector<Diagnostic>& diags, std::vector<fs::path>& read) {
  std::vector<fs::path> stack{fs::weakly_canonical(path)};
  return load_file(path, path.string(), stack, diags, nullptr, read);
}

Node load_tree_from_text(std::string_view text, const std::string& name, const fs::path& base_dir,
                         std::vector<Diagnostic>& diags, std::vector<fs::path>& read) {
  std::vector<fs::path> stack;
  return compose(text, name, base_dir, stack, diags, read);
}

void apply_override(Node& root, const std::string& assignment, std::vector<Diagnostic>& diags) {
  const std::string file = "<--set " + assignment + ">";
  const Mark at{file, 1, 1};
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    diags.push_back({at, "", "expected KEY=VALUE, e.g. --set optim.lr=3e-4"});
    return;
  }
  const std::string key = assignment.substr(0, eq);
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    auto dot = key.find('.', start);
    parts.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); })) {
    diags.push_back({at, key, "empty name in key path; write e.g. model.n_layer=2"});
    return;
  }
  if (parts.front() == "extends") {
    diags.push_back({at, key, "extends cannot be overridden; name the recipe to extend in the file"});
    return;
  }
  Node value = parse_yaml(std::string_view(assignment).substr(eq + 1), file, 0, static_cast<int>(eq) + 1, diags);
  if (value.kind == Node::Kind::Null && value.mark.line == 0) value.mark = at;

  Node* cur = &root;
  std::string walked;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + parts[i];
    Node* next = cur->find(parts[i]);
    if (!next) {
      Node section;
      section.kind = Node::Kind::Map;
      section.mark = at;
      cur->entries.push_back({parts[i], at, std::move(section)});
      next = &cur->entries.back().value;
    } else if (next->kind == Node::Kind::Null) {
      next->kind = Node::Kind::Map;
    } else if (next->kind != Node::Kind::Map) {
      diags.push_back({at, key, "'" + walked + "' holds a value, not a section of keys"});
      return;
    }
    cur = next;
  }
  // A mapping value merges into the section it names, as a recipe file on top of its base would.
  if (Node* existing = cur->find(parts.back()); existing && existing->kind == Node::Kind::Map) {
    merge_into(*existing, std::move(value));
    return;
  }
  cur->erase(parts.back());
  cur->entries.push_back({parts.back(), at, std::move(value)});
}

}  // namespace lathe::recipe::detail
