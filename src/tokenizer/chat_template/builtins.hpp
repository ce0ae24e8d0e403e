// Helpers the globals, methods and filters share: Python's argument binding and checks.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "interp.hpp"
#include "value.hpp"

namespace lathe::tokenizer::jinja {

/// The arguments of a call bound to parameter `names` as Python binds them (positional, then by
/// keyword); the first `required` must be given. Unset: not passed.
using Bound = std::vector<std::optional<Value>>;
Bound bind_args(const std::string& fname, const CallArgs& args, std::initializer_list<const char*> names,
                std::size_t required = 0);

Value make_function(std::string name, std::function<Value(Interp&, CallArgs&)> call);
/// A function Python has and the interpreter refuses when called.
Value unsupported_function(const std::string& what);

/// An int (or bool) argument; `def` when unset; a TypeError otherwise.
int64_t int_arg(const std::optional<Value>& v, const std::string& fname, int64_t def);
/// A str argument; a TypeError otherwise.
std::string str_arg(const std::optional<Value>& v, const std::string& fname);
/// An optional str argument where None means unset (strip(None), split(None)).
std::optional<std::string> opt_str_arg(const std::optional<Value>& v, const std::string& fname);

/// Python's dict(*args, **kwargs).
DictData make_dict(const CallArgs& args, const std::string& fname);

/// The filters that live in their own files: tojson (json_dumps.cpp), and those over sequences
/// (filters_seq.cpp; `found` false when `name` is none of them).
Value tojson_filter(Interp&, const Value& v, CallArgs& args);
Value filter_sequence(Interp& in, const std::string& name, const Value& v, CallArgs& a, bool& found);

}  // namespace lathe::tokenizer::jinja
