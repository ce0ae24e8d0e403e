#include "lathe/data/classification.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "lathe/core/error.hpp"
#include "lathe/data/sampler.hpp"
#include "lathe/io/inputs.hpp"

namespace lathe::data {
namespace fs = std::filesystem;

namespace {

/// Splits delimited text into rows of fields; `quoted` enables RFC 4180 quoting (CSV).
std::vector<std::pair<int, std::vector<std::string>>> parse_rows(const std::string& text, char sep, bool quoted,
                                                                 const fs::path& path) {
  std::vector<std::pair<int, std::vector<std::string>>> rows;
  std::vector<std::string> row;
  std::string field;
  int line = 1, row_line = 1;
  bool in_quotes = false, any = false;
  auto end_row = [&] {
    row.push_back(std::move(field));
    field.clear();
    if (!(row.size() == 1 && row[0].empty())) rows.emplace_back(row_line, std::move(row));
    row.clear();
    any = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!any) row_line = line;
    any = true;
    if (in_quotes) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (quoted && c == '"' && field.empty()) {
      in_quotes = true;
    } else if (c == sep) {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      ++line;
      if (!field.empty() && field.back() == '\r') field.pop_back();
      end_row();
    } else {
      field += c;
    }
  }
  if (in_quotes) throw Error(path.string() + ":" + std::to_string(row_line) + ": unterminated quoted field");
  if (any) end_row();
  return rows;
}

}  // namespace

std::vector<Example> read_examples(const fs::path& path, const std::string& text_field,
                                   const std::string& text_pair_field, const std::string& label_field) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path.string() + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // a UTF-8 byte-order mark (spreadsheet exports)
  std::vector<Example> out;
  const auto ext = path.extension();
  auto where = [&](int line) { return path.string() + ":" + std::to_string(line) + ": "; };
  if (io::is_jsonl(path)) {
    std::istringstream lines(text);
    std::string line;
    for (int n = 1; std::getline(lines, line); ++n) {
      const auto parsed = io::jsonl_line(line, path, n);
      if (!parsed) continue;
      const auto& j = *parsed;
      auto field = [&](const std::string& name) -> std::string {
        if (!j.is_object() || !j.contains(name)) throw Error(where(n) + "missing field '" + name + "'");
        const auto& v = j[name];
        return v.is_string() ? v.get<std::string>() : v.dump();  // numeric labels read as their text
      };
      out.push_back({field(text_field), text_pair_field.empty() ? "" : field(text_pair_field), field(label_field), n});
    }
    return out;
  }
  if (ext != ".csv" && ext != ".tsv")
    throw Error(path.string() + ": classification data must be .csv, .tsv or .jsonl");
  auto rows = parse_rows(text, ext == ".csv" ? ',' : '\t', ext == ".csv", path);
  if (rows.empty()) throw Error(path.string() + ": no header row");
  const auto& header = rows.front().second;
  auto column = [&](const std::string& name) -> std::size_t {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) throw Error(where(1) + "no column '" + name + "' in the header");
    return static_cast<std::size_t>(it - header.begin());
  };
  const std::size_t ct = column(text_field), cl = column(label_field);
  const std::size_t cp = text_pair_field.empty() ? 0 : column(text_pair_field);
  for (std::size_t r = 1; r < rows.size(); ++r) {
    const auto& [line, f] = rows[r];
    if (f.size() != header.size())
      throw Error(where(line) + std::to_string(f.size()) + " fields, the header has " + std::to_string(header.size()));
    out.push_back({f[ct], text_pair_field.empty() ? "" : f[cp], f[cl], line});
  }
  return out;
}

LabelMap::LabelMap(const std::vector<Example>& examples) {
  for (const auto& e : examples) ids_.emplace(e.label, 0);
  for (auto& [name, id] : ids_) {
    id = static_cast<int32_t>(names_.size());
    names_.push_back(name);
  }
}

int32_t LabelMap::id(const Example& e, const fs::path& file) const {
  auto it = ids_.find(e.label);
  if (it == ids_.end())
    throw Error(file.string() + ":" + std::to_string(e.line) + ": label '" + e.label +
                "' does not occur in the training data");
  return it->second;
}

ClassificationBatch collate_examples(const std::vector<Example>& batch, const tokenizer::WordPiece& tok,
                                     const LabelMap& labels, int64_t max_len, const fs::path& file, int32_t pad_id,
                                     bool pair) {
  const std::size_t budget = static_cast<std::size_t>(std::max<int64_t>(0, max_len - (pair ? 3 : 2)));
  std::vector<std::vector<int32_t>> ids, types;
  std::vector<int64_t> y;
  const int32_t cls = tok.token_to_id(tok.options().cls_token), sep = tok.token_to_id(tok.options().sep_token);
  for (const auto& e : batch) {
    auto a = tok.encode(e.text), b = pair ? tok.encode(e.text_pair) : std::vector<int32_t>{};
    while (a.size() + b.size() > budget) (a.size() >= b.size() ? a : b).pop_back();  // longest first
    std::vector<int32_t> s{cls};
    s.insert(s.end(), a.begin(), a.end());
    s.push_back(sep);
    std::vector<int32_t> t(s.size(), 0);
    if (pair) {
      s.insert(s.end(), b.begin(), b.end());
      s.push_back(sep);
      t.resize(s.size(), 1);
    }
    ids.push_back(std::move(s));
    types.push_back(std::move(t));
    y.push_back(labels.id(e, file));
  }
  return {pad_batch(ids, pad_id, &types), at::tensor(y, at::kLong)};
}

}  // namespace lathe::data
