#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/cli/config.h"
#include "uel/cli/options.h"
#include "uel/core/error.h"

namespace uel::cli {
namespace {

struct Parsed {
  Config config;
  std::unique_ptr<OptionSet> options;
};

// Parses args with every option of a run.
std::unique_ptr<Parsed> parse(const std::vector<std::string>& args) {
  auto p = std::make_unique<Parsed>();
  p->options = std::make_unique<OptionSet>("uel test");
  p->config.declare(*p->options);
  EXPECT_TRUE(p->options->parse(args));
  p->config.validate();
  return p;
}

TEST(Options, DefaultsFileAndOverridesInThatOrder) {
  test::ScratchDir dir;
  std::ofstream(dir.file("a.ini"))
      << "[train]\nbatch_size = 64\nseed=9\n[data]\ntrain = /x.h5\n[aug]\nmean = 0.1,0.2,0.3\n";
  auto p = parse(
      {"--config",
       dir.file("a.ini"),
       "--train.batch_size=32",
       "--model.arch",
       "resnet18",
       "--data.drop_last=false",
       "--data.val_fraction=0.1"});
  EXPECT_FALSE(p->config.data.drop_last);
  EXPECT_DOUBLE_EQ(p->config.data.val_fraction, 0.1);
  EXPECT_EQ(p->config.train.batch_size, 32);  // the command line beats the file
  EXPECT_EQ(p->config.train.seed, 9u);        // the file beats the default
  EXPECT_EQ(p->config.data.train, "/x.h5");
  EXPECT_EQ(p->config.data.workers, 1);  // default
  EXPECT_EQ(p->config.aug.mean, (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(p->config.model.arch, "resnet18");
}

TEST(Options, ResolvedIniParsesBackToTheSameValues) {
  test::ScratchDir dir;
  auto p = parse({"--train.batch_size=48", "--aug.hue=0.1", "--data.classes=0-4", "--aug.std=0.5"});
  const std::string ini = p->options->to_ini();
  EXPECT_NE(ini.find("[train]\nmethod = isif\nbatch_size = 48\n"), std::string::npos) << ini;
  std::ofstream(dir.file("resolved.ini")) << ini;
  auto q = parse({"--config", dir.file("resolved.ini")});
  EXPECT_EQ(q->options->to_ini(), ini);
  EXPECT_EQ(q->config.data.classes, "0-4");
  EXPECT_DOUBLE_EQ(q->config.aug.hue, 0.1);
}

TEST(Options, UnknownKeysNameTheKeyAndTheValidOnes) {
  test::ScratchDir dir;
  std::ofstream(dir.file("typo.ini")) << "[train]\nbatch_sise = 64\n";
  EXPECT_THROW_WITH(
      parse({"--config", dir.file("typo.ini")}),
      ConfigError,
      "unknown option 'train.batch_sise' in " + dir.file("typo.ini") +
          "; did you mean 'train.batch_size'?");
  EXPECT_THROW_WITH(
      parse({"--config", dir.file("typo.ini")}),
      ConfigError,
      "Valid keys in [train]: train.method, train.batch_size");
  EXPECT_THROW_WITH(
      parse({"--data.trian=x"}),
      ConfigError,
      "unknown option 'data.trian' on the command line; did you mean 'data.train'?");
  EXPECT_THROW_WITH(parse({"stray"}), ConfigError, "too many arguments; usage: uel test");
  EXPECT_THROW_WITH(parse({"--config", dir.file("nope.ini")}), ConfigError, "does not exist");
}

TEST(Options, BadValuesNameTheKeyAndTheExpectation) {
  EXPECT_THROW_WITH(parse({"--train.batch_size=abc"}), ConfigError, "train.batch_size");
  EXPECT_THROW_WITH(parse({"--train.batch_size=abc"}), ConfigError, "expected integer");
  EXPECT_THROW_WITH(
      parse({"--train.batch_size=-8"}), ConfigError, "--train.batch_size must be positive, got -8");
  EXPECT_THROW_WITH(parse({"--data.workers=0"}), ConfigError, "--data.workers must be positive");
  EXPECT_THROW_WITH(
      parse({"--model.arch=resnet19"}),
      ConfigError,
      "--model.arch is 'resnet19', not one of small_cnn|resnet18|resnet50");
  EXPECT_THROW_WITH(parse({"--aug.mean=0.1,x"}), ConfigError, "'x' is not a number");
  EXPECT_THROW_WITH(
      parse({"--aug.flip_p=2"}),
      ConfigError,
      "--aug.grayscale_p and --aug.flip_p are probabilities");
  EXPECT_THROW_WITH(parse({"--aug.rotation=maybe"}), ConfigError, "aug.rotation");
  EXPECT_THROW_WITH(
      parse({"--data.val_fraction=1"}),
      ConfigError,
      "--data.val_fraction must be in [0, 1), got 1");
  EXPECT_THROW_WITH(
      parse({"--isif.temperature=0"}), ConfigError, "--isif.temperature must be positive");
  EXPECT_THROW_WITH(parse({"--eval.knn_tau=-1"}), ConfigError, "--eval.knn_tau must be positive");
}

TEST(Options, PositionalsAreRequired) {
  std::string file;
  OptionSet o("uel info FILE");
  o.add_positional("file", &file, "the file");
  EXPECT_THROW_WITH(o.parse({}), ConfigError, "missing argument file");
  EXPECT_TRUE(o.parse({"x.h5"}));
  EXPECT_EQ(file, "x.h5");
}

TEST(Options, HelpListsEveryOptionWithItsDefault) {
  auto p = parse({});
  const std::string help = p->options->help();
  EXPECT_NE(help.find("--train.batch_size"), std::string::npos);
  EXPECT_NE(help.find("default: 128"), std::string::npos);
  EXPECT_NE(help.find("small_cnn|resnet18|resnet50"), std::string::npos);
}

}  // namespace
}  // namespace uel::cli
