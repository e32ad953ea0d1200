#pragma once

// Options declared once: each binds a dotted key ("train.lr") to a field whose current value is
// the default. Values come from an INI file (`[train] lr=0.03`) and `--train.lr=0.03` overrides;
// the command line beats the file. Unknown keys and bad values are ConfigErrors naming the key
// and what is valid.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace uel::cli {

class OptionSet {
 public:
  // usage: the command's synopsis line for --help.
  explicit OptionSet(std::string usage);
  ~OptionSet();
  OptionSet(const OptionSet&) = delete;
  OptionSet& operator=(const OptionSet&) = delete;

  // Supported T: bool, int, int64_t, uint64_t, double, std::string, std::vector<double>
  // (comma-separated). `check` returns an error message, or "" when the value is fine.
  template <class T>
  OptionSet& add(
      const std::string& key,
      T* target,
      const std::string& help,
      std::function<std::string(const T&)> check = {});
  OptionSet& add_choice(
      const std::string& key,
      std::string* target,
      std::vector<std::string> choices,
      const std::string& help);
  // A bare word after the command (`uel info FILE`); required unless it has a default.
  OptionSet& add_positional(const std::string& name, std::string* target, const std::string& help);
  // One or more bare words after the command (`uel report RUN [RUN ...]`); the last positional.
  OptionSet& add_positional_list(
      const std::string& name, std::vector<std::string>* targets, const std::string& help);

  // A check across options (ConfigError), run by parse after every option's own check and
  // before --print-config prints: a configuration that prints is one that runs.
  OptionSet& add_validator(std::function<void()> validator);

  // Parses the arguments after the subcommand, reading `--config FILE` when given, then runs
  // every check. Returns false when --help or --print-config was handled (printed to stdout).
  bool parse(const std::vector<std::string>& args);

  // The resolved values of the dotted options as INI text (the saved config of a run).
  std::string to_ini() const;
  std::string help() const;

  // Shorthands for common checks.
  template <class T>
  static std::function<std::string(const T&)> positive();
  template <class T>
  static std::function<std::string(const T&)> non_negative();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "-1" for a negative value and so on; used by positive()/non_negative().
std::string describe_must_be(const std::string& what, const std::string& value);

template <class T>
std::function<std::string(const T&)> OptionSet::positive() {
  return [](const T& v) {
    return v > 0 ? std::string() : describe_must_be("positive", std::to_string(v));
  };
}

template <class T>
std::function<std::string(const T&)> OptionSet::non_negative() {
  return [](const T& v) {
    return v >= 0 ? std::string() : describe_must_be(">= 0", std::to_string(v));
  };
}

}  // namespace uel::cli
