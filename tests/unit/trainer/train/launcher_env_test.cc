// Who a rank is, from torchrun's or Slurm's environment (trainer/train/launcher_env.h).
#include "trainer/train/launcher_env.h"

#include <gtest/gtest.h>

#include <map>

namespace anneal::train {
namespace {

StatusOr<LauncherEnv> Read(const std::map<std::string, std::string>& vars) {
  return ReadLauncherEnv([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// What srun sets for task 5 of 8 (2 nodes x 4 tasks), job 4242, on nodes gpu[07-08].
std::map<std::string, std::string> Srun() {
  return {{"SLURM_PROCID", "5"},
          {"SLURM_NTASKS", "8"},
          {"SLURM_LOCALID", "1"},
          {"SLURM_NNODES", "2"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_JOB_ID", "4242"},
          {"SLURM_JOB_NODELIST", "gpu[07-08]"}};
}

TEST(LauncherEnv, NothingSetIsOneProcess) {
  auto env = Read({});
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->rank, 0);
  EXPECT_EQ(env->world, 1);
  EXPECT_EQ(env->launcher, "none");
}

TEST(LauncherEnv, TorchrunVariables) {
  auto env = Read({{"RANK", "3"},
                   {"WORLD_SIZE", "4"},
                   {"LOCAL_RANK", "1"},
                   {"LOCAL_WORLD_SIZE", "2"},
                   {"MASTER_ADDR", "10.0.0.1"},
                   {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->launcher, "torchrun");
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->world, 4);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world, 2);
  EXPECT_EQ(env->master_addr, "10.0.0.1");
  EXPECT_EQ(env->master_port, 29500);
}

TEST(LauncherEnv, SrunVariables) {
  auto env = Read(Srun());
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->launcher, "slurm");
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world, 4);
  EXPECT_EQ(env->master_addr, "gpu07");
  EXPECT_EQ(env->master_port, 15000 + 4242);
}

TEST(LauncherEnv, TorchrunInsideAnAllocationWins) {
  auto vars = Srun();
  vars.insert({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1234"}});
  auto env = Read(vars);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->launcher, "torchrun");
  EXPECT_EQ(env->world, 2);
  EXPECT_EQ(env->master_port, 1234);
}

TEST(LauncherEnv, MasterAddrAndPortOverrideSlurmsDerivedOnes) {
  auto vars = Srun();
  vars["MASTER_ADDR"] = "login1";
  vars["MASTER_PORT"] = "29400";
  vars["SLURM_NTASKS_PER_NODE"] = "4";
  auto env = Read(vars);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->master_addr, "login1");
  EXPECT_EQ(env->master_port, 29400);
  EXPECT_EQ(env->local_world, 4);
}

TEST(LauncherEnv, BadValuesNameTheVariable) {
  auto vars = Srun();
  vars["SLURM_PROCID"] = "x1";
  auto env = Read(vars);
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("SLURM_PROCID='x1'"), std::string::npos) << env.status().message();

  vars = Srun();
  vars.erase("SLURM_NTASKS");
  env = Read(vars);
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("SLURM_NTASKS is not"), std::string::npos) << env.status().message();

  env = Read({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("rank 4 is not below the world size 4"), std::string::npos);

  vars = Srun();
  vars["SLURM_JOB_NODELIST"] = "gpu[07-08";
  env = Read(vars);
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("'[' without ']'"), std::string::npos) << env.status().message();
}

TEST(LauncherEnv, FirstHostOfSlurmNodeLists) {
  const std::vector<std::pair<std::string, std::string>> table = {
      {"node1", "node1"},           {"a,b,c", "a"},        {"n[1-3]", "n1"},         {"gpu[007-009,012]", "gpu007"},
      {"rack[2,5]-ib", "rack2-ib"}, {"x[4],y[1-2]", "x4"}, {"login,n[1-2]", "login"}};
  for (const auto& [list, first] : table) {
    auto host = FirstSlurmHost(list);
    ASSERT_TRUE(host.ok()) << list << ": " << host.status().ToString();
    EXPECT_EQ(*host, first) << list;
  }
  for (const char* bad : {"", "[1-2]", "n[a-b]", ",n1"}) EXPECT_FALSE(FirstSlurmHost(bad).ok()) << bad;
}

}  // namespace
}  // namespace anneal::train
