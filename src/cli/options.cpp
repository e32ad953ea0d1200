#include "uel/cli/options.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <boost/program_options.hpp>

#include "uel/core/error.h"

namespace po = boost::program_options;

namespace uel::cli {

namespace {

struct Entry {
  std::string key;
  std::string help;
  std::string type;
  std::function<std::string()> render;
  std::function<std::string()> check;  // "" when fine
};

std::string render_value(bool v) {
  return v ? "true" : "false";
}
std::string render_value(const std::string& v) {
  return v;
}
std::string render_value(double v) {
  return fmt::format("{}", v);
}
template <class T>
std::string render_value(const T& v) {
  return std::to_string(v);
}
std::string render_value(const std::vector<double>& v) {
  return fmt::format("{}", fmt::join(v, ","));
}

std::vector<double> parse_doubles(const std::string& key, const std::string& text) {
  std::vector<double> out;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size()) {
        throw std::invalid_argument(item);
      }
    } catch (const std::exception&) {
      UEL_CHECK_CONFIG(
          false,
          "--{}='{}': '{}' is not a number; write numbers separated by commas",
          key,
          text,
          item);
    }
  }
  return out;
}

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "true|false";
  } else if constexpr (std::is_same_v<T, double>) {
    return "number";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return "text";
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    return "numbers,...";
  } else if constexpr (std::is_unsigned_v<T>) {
    return "integer >= 0";
  } else {
    return "integer";
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string section_of(const std::string& key) {
  const size_t dot = key.find('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

}  // namespace

std::string describe_must_be(const std::string& what, const std::string& value) {
  return fmt::format("must be {}, got {}", what, value);
}

struct OptionSet::Impl {
  std::string usage;
  po::options_description desc;
  po::positional_options_description positional;
  std::vector<Entry> entries;
  std::vector<std::pair<std::string, std::string*>> positionals;
  std::vector<std::pair<std::string, std::vector<std::string>*>> positional_lists;
  std::vector<std::string> positional_help;
  std::vector<std::function<void()>> validators;
  std::string config_file;

  const Entry* find(const std::string& key) const {
    for (const auto& e : entries) {
      if (e.key == key)
        return &e;
    }
    return nullptr;
  }

  // "unknown option 'x'; did you mean 'y'? Valid keys in [data]: ..."
  std::string unknown_message(const std::string& key, const std::string& where) const {
    std::string best;
    size_t best_distance = 4;
    std::vector<std::string> same_section;
    for (const auto& e : entries) {
      const size_t d = edit_distance(key, e.key);
      if (d < best_distance) {
        best_distance = d;
        best = e.key;
      }
      if (!section_of(key).empty() && section_of(e.key) == section_of(key)) {
        same_section.push_back(e.key);
      }
    }
    std::string message = fmt::format("unknown option '{}'{}", key, where);
    if (!best.empty()) {
      message += fmt::format("; did you mean '{}'?", best);
    }
    if (!same_section.empty()) {
      message +=
          fmt::format(" Valid keys in [{}]: {}.", section_of(key), fmt::join(same_section, ", "));
    } else {
      message += " `--help` lists every option.";
    }
    return message;
  }
};

OptionSet::OptionSet(std::string usage) : impl_(std::make_unique<Impl>()) {
  impl_->usage = std::move(usage);
  impl_->desc.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(&impl_->config_file), "INI file with [section] key=value")(
      "print-config", "print the resolved configuration and exit");
}

OptionSet::~OptionSet() = default;

template <class T>
OptionSet& OptionSet::add(
    const std::string& key,
    T* target,
    const std::string& help,
    std::function<std::string(const T&)> check) {
  Entry entry{key, help, type_name<T>(), [target] { return render_value(*target); }, {}};
  if (check) {
    entry.check = [target, check, key] {
      const std::string problem = check(*target);
      return problem.empty() ? problem : fmt::format("--{} {}", key, problem);
    };
  }
  if constexpr (std::is_same_v<T, std::vector<double>>) {
    impl_->desc.add_options()(
        key.c_str(),
        po::value<std::string>()
            ->default_value(render_value(*target))
            ->notifier(
                [target, key](const std::string& text) { *target = parse_doubles(key, text); }),
        help.c_str());
  } else {
    impl_->desc.add_options()(
        key.c_str(),
        po::value<T>(target)->default_value(*target, render_value(*target)),
        help.c_str());
  }
  impl_->entries.push_back(std::move(entry));
  return *this;
}

template OptionSet& OptionSet::add<bool>(
    const std::string&, bool*, const std::string&, std::function<std::string(const bool&)>);
template OptionSet& OptionSet::add<int>(
    const std::string&, int*, const std::string&, std::function<std::string(const int&)>);
template OptionSet& OptionSet::add<int64_t>(
    const std::string&, int64_t*, const std::string&, std::function<std::string(const int64_t&)>);
template OptionSet& OptionSet::add<uint64_t>(
    const std::string&, uint64_t*, const std::string&, std::function<std::string(const uint64_t&)>);
template OptionSet& OptionSet::add<double>(
    const std::string&, double*, const std::string&, std::function<std::string(const double&)>);
template OptionSet& OptionSet::add<std::string>(
    const std::string&,
    std::string*,
    const std::string&,
    std::function<std::string(const std::string&)>);
template OptionSet& OptionSet::add<std::vector<double>>(
    const std::string&,
    std::vector<double>*,
    const std::string&,
    std::function<std::string(const std::vector<double>&)>);

OptionSet& OptionSet::add_choice(
    const std::string& key,
    std::string* target,
    std::vector<std::string> choices,
    const std::string& help) {
  const std::string listed = fmt::format("{}", fmt::join(choices, "|"));
  add<std::string>(key, target, help, [choices, listed](const std::string& v) {
    return std::find(choices.begin(), choices.end(), v) != choices.end()
               ? std::string()
               : fmt::format("is '{}', not one of {}", v, listed);
  });
  impl_->entries.back().type = listed;
  return *this;
}

OptionSet& OptionSet::add_positional(
    const std::string& name, std::string* target, const std::string& help) {
  impl_->desc.add_options()(name.c_str(), po::value<std::string>(target), help.c_str());
  impl_->positional.add(name.c_str(), 1);
  impl_->positionals.emplace_back(name, target);
  impl_->positional_help.push_back(fmt::format("  {:<28} {}", name, help));
  return *this;
}

OptionSet& OptionSet::add_positional_list(
    const std::string& name, std::vector<std::string>* targets, const std::string& help) {
  impl_->desc.add_options()(
      name.c_str(), po::value<std::vector<std::string>>(targets)->multitoken(), help.c_str());
  impl_->positional.add(name.c_str(), -1);
  impl_->positional_lists.emplace_back(name, targets);
  impl_->positional_help.push_back(fmt::format("  {:<28} {}", name + " ...", help));
  return *this;
}

OptionSet& OptionSet::add_validator(std::function<void()> validator) {
  impl_->validators.push_back(std::move(validator));
  return *this;
}

bool OptionSet::parse(const std::vector<std::string>& args) {
  // Unknown keys first: as `--key value` Boost would take the value for a positional argument
  // and report "too many arguments" instead of the key.
  for (const std::string& arg : args) {
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const std::string key = arg.substr(2, arg.find('=') - 2);
      UEL_CHECK_CONFIG(
          impl_->desc.find_nothrow(key, false) != nullptr,
          "{}",
          impl_->unknown_message(key, " on the command line"));
    }
  }
  po::variables_map vm;
  try {
    po::parsed_options cl =
        po::command_line_parser(args).options(impl_->desc).positional(impl_->positional).run();
    po::store(cl, vm);
    if (vm.count("help")) {
      std::cout << help();
      return false;
    }
    if (vm.count("config")) {
      const std::string file = vm["config"].as<std::string>();
      std::ifstream in(file);
      UEL_CHECK_CONFIG(
          std::filesystem::is_regular_file(file) && in.good(),
          "--config '{}' does not exist or cannot be read",
          file);
      po::parsed_options parsed = po::parse_config_file(in, impl_->desc, true);
      for (const auto& o : parsed.options) {
        const bool known = !o.unregistered && impl_->find(o.string_key) != nullptr;
        UEL_CHECK_CONFIG(known, "{}", impl_->unknown_message(o.string_key, " in " + file));
      }
      po::store(parsed, vm);
    }
    po::notify(vm);
  } catch (const po::too_many_positional_options_error&) {
    UEL_CHECK_CONFIG(false, "too many arguments; usage: {}", impl_->usage);
  } catch (const po::error& e) {
    std::string hint;
    if (const auto* v = dynamic_cast<const po::validation_error*>(&e)) {
      std::string key = v->get_option_name();
      key.erase(0, key.find_first_not_of('-'));
      if (const Entry* entry = impl_->find(key)) {
        hint = fmt::format(" (expected {})", entry->type);
      }
    }
    UEL_CHECK_CONFIG(false, "{}{}; `--help` lists every option", e.what(), hint);
  }
  for (const auto& [name, target] : impl_->positionals) {
    UEL_CHECK_CONFIG(!target->empty(), "missing argument {}; usage: {}", name, impl_->usage);
  }
  for (const auto& [name, targets] : impl_->positional_lists) {
    UEL_CHECK_CONFIG(!targets->empty(), "missing argument {}; usage: {}", name, impl_->usage);
  }
  for (const auto& e : impl_->entries) {
    if (e.check) {
      const std::string problem = e.check();
      UEL_CHECK_CONFIG(problem.empty(), "{}", problem);
    }
  }
  for (const auto& validator : impl_->validators)
    validator();
  if (vm.count("print-config")) {
    std::cout << to_ini();
    return false;
  }
  return true;
}

std::string OptionSet::to_ini() const {
  std::map<std::string, std::vector<const Entry*>> sections;
  std::vector<std::string> order;
  for (const auto& e : impl_->entries) {
    const std::string section = section_of(e.key);
    if (section.empty())
      continue;
    if (!sections.count(section))
      order.push_back(section);
    sections[section].push_back(&e);
  }
  std::string out;
  for (const auto& section : order) {
    out += fmt::format("[{}]\n", section);
    for (const Entry* e : sections[section]) {
      out += fmt::format("{} = {}\n", e->key.substr(section.size() + 1), e->render());
    }
    out += "\n";
  }
  return out;
}

std::string OptionSet::help() const {
  std::string out = fmt::format("usage: {}\n", impl_->usage);
  if (!impl_->positional_help.empty()) {
    out += "\narguments:\n" + fmt::format("{}\n", fmt::join(impl_->positional_help, "\n"));
  }
  out += "\noptions (INI files set [section] key=value; the command line overrides):\n";
  out += fmt::format("  {:<28} {}\n", "--config FILE", "INI file to read options from");
  out +=
      fmt::format("  {:<28} {}\n", "--print-config", "print the resolved configuration and exit");
  for (const auto& e : impl_->entries) {
    out += fmt::format(
        "  {:<28} {} [{}, default: {}]\n", fmt::format("--{}", e.key), e.help, e.type, e.render());
  }
  return out;
}

}  // namespace uel::cli
