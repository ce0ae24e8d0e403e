// Python's str methods on UTF-8 text: Python indexes strings by code point, strips and splits on
// its own whitespace set and maps case with the full Unicode mappings. Case and category data come
// from utf8proc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::tokenizer::jinja {

/// The code points of UTF-8 text; invalid UTF-8 is an error.
std::u32string to_u32(std::string_view s);
std::string to_utf8(std::u32string_view s);
/// Number of code points.
std::size_t u32_length(std::string_view s);

/// str.isspace() of one code point (the set Python's strip(), split() and re's \s use).
bool py_isspace(char32_t cp);
/// str.isprintable() of one code point.
bool py_isprintable(char32_t cp);

/// str.strip / lstrip / rstrip: `chars` unset strips whitespace.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
/// str.split / rsplit; `sep` unset splits on runs of whitespace. `maxsplit` < 0: no limit.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                                  bool from_right);
/// str.splitlines() (keepends false).
std::vector<std::string> py_splitlines(std::string_view s);
/// str.replace; `count` < 0 replaces all.
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
/// str.find / rfind: the code point index, or -1.
int64_t py_find(std::string_view s, std::string_view sub, bool from_right);
/// str.count (non-overlapping).
int64_t py_count(std::string_view s, std::string_view sub);

std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
/// str.title(): a cased character after a cased one is lowered, any other is title-cased.
std::string py_title(std::string_view s);
/// str.capitalize(): the first character title-cased, the rest lowered.
std::string py_capitalize(std::string_view s);
bool py_islower(std::string_view s);
bool py_isupper(std::string_view s);
/// re's \w of one code point (letters, numbers, underscore).
bool py_isword(char32_t cp);
/// str.isalpha / isalnum / isdecimal over the whole string (false when empty).
bool py_isalpha(std::string_view s);
bool py_isalnum(std::string_view s);
bool py_isdecimal(std::string_view s);

/// repr() of a str: quoted and escaped as Python writes it.
std::string py_repr_str(std::string_view s);
/// A JSON string literal as Python's json.dumps writes it.
std::string json_quote(std::string_view s, bool ensure_ascii);
/// markupsafe.escape of text: & < > ' " as entities.
std::string html_escape(std::string_view s);

/// int(text, base) as Python parses it (whitespace, sign, prefixes, underscores); nullopt when
/// Python would raise ValueError.
std::optional<int64_t> parse_py_int(std::string_view s, int base);
/// float(text) as Python parses it; nullopt on ValueError.
std::optional<double> parse_py_float(std::string_view s);

}  // namespace lathe::tokenizer::jinja
