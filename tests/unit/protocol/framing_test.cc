// Framing over real ZeroMQ sockets on loopback: round trip, version mismatch, garbage.
#include <gtest/gtest.h>

#include <zmq.hpp>

#include "protocol/anneal.pb.h"
#include "protocol/framing.h"

namespace anneal::protocol {
namespace {

struct LoopbackPair {
  zmq::context_t ctx;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  LoopbackPair() {
    router.set(zmq::sockopt::rcvtimeo, 5000);
    dealer.set(zmq::sockopt::rcvtimeo, 5000);
    router.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:*");
    dealer.connect(router.get(zmq::sockopt::last_endpoint));
  }
};

TEST(Framing, RoundTripOverLoopback) {
  LoopbackPair p;
  pb::AgentToCoordinator msg;
  msg.mutable_register_()->set_node_id("node-a");
  msg.mutable_register_()->mutable_inventory()->set_slots(4);
  ASSERT_TRUE(Send(p.dealer, MessageKind::kAgentToCoordinator, msg).ok());

  auto frames = Receive(p.router, /*routed=*/true);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  ASSERT_TRUE(frames->routing_id.has_value());
  pb::AgentToCoordinator got;
  ASSERT_TRUE(Parse(*frames, MessageKind::kAgentToCoordinator, &got).ok());
  EXPECT_EQ(got.register_().node_id(), "node-a");
  EXPECT_EQ(got.register_().inventory().slots(), 4u);

  // And back through the routing id.
  pb::CoordinatorToAgent reply;
  reply.mutable_ack()->set_seq(7);
  ASSERT_TRUE(Send(p.router, MessageKind::kCoordinatorToAgent, reply, &*frames->routing_id).ok());
  auto back = Receive(p.dealer, /*routed=*/false);
  ASSERT_TRUE(back.ok());
  pb::CoordinatorToAgent got_reply;
  ASSERT_TRUE(Parse(*back, MessageKind::kCoordinatorToAgent, &got_reply).ok());
  EXPECT_EQ(got_reply.ack().seq(), 7u);
}

TEST(Framing, WrongVersionIsAClearError) {
  LoopbackPair p;
  const std::string header = EncodeHeader(MessageKind::kClientRequest, kProtocolVersion + 1);
  p.dealer.send(zmq::buffer(header), zmq::send_flags::sndmore);
  p.dealer.send(zmq::str_buffer("irrelevant"), zmq::send_flags::none);
  auto frames = Receive(p.router, true);
  ASSERT_TRUE(frames.ok());
  pb::ClientRequest req;
  Status st = Parse(*frames, MessageKind::kClientRequest, &req);
  EXPECT_EQ(st.code(), StatusCode::kVersionMismatch);
  EXPECT_NE(st.message().find("peer speaks version 2, this build speaks version 1"), std::string::npos)
      << st.message();
}

TEST(Framing, GarbageIsRejectedAndTheSocketStaysInSync) {
  LoopbackPair p;
  p.dealer.send(zmq::str_buffer("GET / HTTP/1.1\r\n\r\n"), zmq::send_flags::none);
  auto frames = Receive(p.router, true);
  ASSERT_TRUE(frames.ok());
  pb::ClientRequest req;
  Status st = Parse(*frames, MessageKind::kClientRequest, &req);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("not an Anneal message"), std::string::npos) << st.message();

  // A valid header with a body that is not a protobuf of that type.
  const std::string header = EncodeHeader(MessageKind::kClientRequest);
  p.dealer.send(zmq::buffer(header), zmq::send_flags::sndmore);
  p.dealer.send(zmq::str_buffer("\xff\xff\xff\xff"), zmq::send_flags::none);
  frames = Receive(p.router, true);
  ASSERT_TRUE(frames.ok());
  st = Parse(*frames, MessageKind::kClientRequest, &req);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("malformed ClientRequest body"), std::string::npos) << st.message();

  // The next well-formed message still parses: nothing was left half-read.
  pb::ClientRequest ok;
  ok.set_token("t");
  ok.mutable_list_nodes();
  ASSERT_TRUE(Send(p.dealer, MessageKind::kClientRequest, ok).ok());
  frames = Receive(p.router, true);
  ASSERT_TRUE(frames.ok());
  ASSERT_TRUE(Parse(*frames, MessageKind::kClientRequest, &req).ok());
  EXPECT_EQ(req.token(), "t");
}

TEST(Framing, WrongKindIsRejected) {
  LoopbackPair p;
  pb::ClientReply reply;
  ASSERT_TRUE(Send(p.dealer, MessageKind::kClientReply, reply).ok());
  auto frames = Receive(p.router, true);
  ASSERT_TRUE(frames.ok());
  pb::ClientRequest req;
  Status st = Parse(*frames, MessageKind::kClientRequest, &req);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("unexpected message kind ClientReply"), std::string::npos);
}

TEST(Framing, StatusCrossesTheWireUnchanged) {
  pb::Error e;
  ToProto(NotFoundError("job j-7 not found"), &e);
  Status back = FromProto(e);
  EXPECT_EQ(back.code(), StatusCode::kNotFound);
  EXPECT_EQ(back.message(), "job j-7 not found");
  ToProto(Status::Ok(), &e);
  EXPECT_TRUE(FromProto(e).ok());
}

}  // namespace
}  // namespace anneal::protocol
