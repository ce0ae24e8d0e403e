// metrics.jsonl, TensorBoard event files and the console line.

#include "lathe/train/metrics.hpp"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.hpp"
#include "lathe/io/atomic_file.hpp"
#include "lathe/io/ownership.hpp"

namespace lathe::train {
namespace fs = std::filesystem;

namespace {

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Protocol buffer wire format, just what tensorflow.Event needs.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void tag(std::string& out, int field, int wire) { varint(out, static_cast<uint64_t>(field) << 3 | wire); }
template <class T>
void fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian hosts
  out.append(bytes, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& data) {
  tag(out, field, 2);
  varint(out, data.size());
  out += data;
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
// Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
std::string event(double time, int64_t step, const std::string* file_version, const std::string* scalar_tag,
                  float value) {
  std::string e;
  tag(e, 1, 1);
  fixed(e, time);
  if (step != 0) {
    tag(e, 2, 0);
    varint(e, static_cast<uint64_t>(step));
  }
  if (file_version) bytes_field(e, 3, *file_version);
  if (scalar_tag) {
    std::string v;
    bytes_field(v, 1, *scalar_tag);
    tag(v, 2, 5);
    fixed(v, value);
    std::string summary;
    bytes_field(summary, 1, v);
    bytes_field(e, 5, summary);
  }
  return e;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace

uint32_t crc32c(const void* data, std::size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

TensorBoardWriter::TensorBoardWriter(const fs::path& dir) {
  fs::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = dir / fmt::format("events.out.tfevents.{}.{}.{}", static_cast<int64_t>(wall_time()), host, getpid());
  io::claim(path_);
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw Error(path_.string() + ": cannot create the TensorBoard event file");
  const std::string version = "brain.Event:2";
  write_record(event(wall_time(), 0, &version, nullptr, 0));
  flush();
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string rec;
  const uint64_t len = data.size();
  fixed(rec, len);
  fixed(rec, masked(crc32c(&len, sizeof(len))));
  rec += data;
  fixed(rec, masked(crc32c(data.data(), data.size())));
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
}

void TensorBoardWriter::add_scalar(const std::string& name, double value, int64_t step) {
  write_record(event(wall_time(), step, nullptr, &name, static_cast<float>(value)));
}

void TensorBoardWriter::flush() { out_.flush(); }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
}

Metrics::Metrics(MetricsOptions options) : o_(std::move(options)) {
  if (o_.out_dir.empty()) return;
  fs::create_directories(o_.out_dir);
  io::claim(jsonl_path());
  if (o_.resume_step >= 0 && fs::exists(jsonl_path())) {
    // Steps after the checkpoint resumed from are trained again: their old records go.
    std::ifstream in(jsonl_path());
    std::string line, kept;
    bool dropped = false;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.value("run_id", "") == o_.run_id && j.value("step", int64_t{0}) > o_.resume_step) {
        dropped = true;
        continue;
      }
      kept += line + "\n";
    }
    in.close();
    if (dropped) io::write_file_atomic(jsonl_path(), kept);
  }
  jsonl_.open(jsonl_path(), std::ios::app);
  if (!jsonl_) throw Error(jsonl_path().string() + ": cannot open for writing");
  if (o_.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(o_.out_dir / "tensorboard");
}

Metrics::~Metrics() {
  if (line_open_ && o_.console) *o_.console << "\n" << std::flush;
}

fs::path Metrics::jsonl_path() const { return o_.out_dir / "metrics.jsonl"; }

void Metrics::record(const Record& r) {
  if (!jsonl_.is_open()) return;
  nlohmann::json j = {{"step", r.step}, {"split", r.split}, {"time", wall_time()}};
  if (!o_.run_id.empty()) j["run_id"] = o_.run_id;
  for (const auto& [k, v] : r.values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(std::to_string(v));
  jsonl_ << j.dump() << "\n" << std::flush;
  if (tb_) {
    for (const auto& [k, v] : r.values) tb_->add_scalar(r.split + "/" + k, v, r.step);
    tb_->flush();
  }
}

void Metrics::progress(const ProgressLine& l, bool logged) {
  if (!o_.console || (!o_.console_is_tty && !logged)) return;
  std::string s = fmt::format("step {}/{}", l.step, l.max_steps);
  if (l.loss >= 0 || std::isnan(l.loss)) s += fmt::format(" | loss {:.4f}", l.loss);
  if (l.lr >= 0) s += fmt::format(" | lr {:.2e}", l.lr);
  if (l.tokens_per_s >= 0) s += fmt::format(" | {:.0f} tok/s", l.tokens_per_s);
  if (l.mfu >= 0) s += fmt::format(" | MFU {:.1f}%", 100.0 * l.mfu);
  if (l.eta_s >= 0) s += " | ETA " + format_duration(l.eta_s);
  if (o_.console_is_tty) {
    *o_.console << "\r\033[K" << s << std::flush;
    line_open_ = true;
  } else {
    *o_.console << s << "\n" << std::flush;
  }
}

void Metrics::message(const std::string& text) {
  if (!o_.console) return;
  if (line_open_) *o_.console << "\n";
  line_open_ = false;
  *o_.console << text << "\n" << std::flush;
}

StepWindow::StepWindow(int64_t start_step)
    : start_(Clock::now()), window_start_(start_), start_step_(start_step) {}

void StepWindow::add(double loss, bool skipped, int64_t tokens) {
  if (!skipped) {
    loss_ += loss;
    ++steps_;
  }
  tokens_ += tokens;
  run_tokens_ += tokens;
}

double StepWindow::tokens_per_s() const {
  const double s = std::chrono::duration<double>(Clock::now() - window_start_).count();
  return s > 0 ? static_cast<double>(tokens_) / s : 0;
}

double StepWindow::mean_loss(double otherwise) const {
  return steps_ ? loss_ / static_cast<double>(steps_) : otherwise;
}

double StepWindow::eta_s(int64_t step, int64_t max_steps) const {
  const auto done = step - start_step_;
  const double per_step = done > 0 ? run_seconds() / static_cast<double>(done) : 0;
  return per_step * static_cast<double>(max_steps - step);
}

void StepWindow::reset() {
  loss_ = 0;
  steps_ = 0;
  tokens_ = 0;
  window_start_ = Clock::now();
}

double StepWindow::run_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

}  // namespace lathe::train
